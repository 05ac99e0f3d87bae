// What the host must have before a step can run. Each check knows the one
// line that fixes it; `npm run doctor` prints them all, a step stops at the
// first one it needs.
import { existsSync, readFileSync, statfsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { JailError } from './errors.ts';

export interface Check {
  name: string;
  ok: boolean;
  detail?: string;
  fix: string;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

export function rootCheck(): Check {
  return { name: 'running as root', ok: isRoot(), fix: 'run with sudo, e.g. sudo npm run step 4' };
}

/** The Debian package each host tool comes from. */
export const toolPackages: Record<string, string> = {
  unshare: 'util-linux',
  nsenter: 'util-linux',
  setpriv: 'util-linux',
  flock: 'util-linux',
  mount: 'mount',
  chroot: 'coreutils',
  busybox: 'busybox-static',
  debootstrap: 'debootstrap',
  ip: 'iproute2',
  iptables: 'iptables',
  nft: 'nftables',
  script: 'bsdutils',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  ps: 'procps',
  capsh: 'libcap2-bin',
  skopeo: 'skopeo',
  runc: 'runc',
  getfattr: 'attr',
};

export function which(tool: string): string | undefined {
  const path = process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin';
  // root's tools live in sbin, which a sudo'd PATH may lack
  for (const dir of [...path.split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin']) {
    const full = join(dir, tool);
    // a stat that says "not here" instead of throwing (npm's PATH has a dozen dirs without the tool, and
    // each throw costs); a dir we may not search (EACCES, without root) still throws
    try {
      const st = statSync(full, { throwIfNoEntry: false });
      if (st?.isFile() && st.mode & 0o111) return full;
    } catch {}
  }
  return undefined;
}

export function toolCheck(tool: string): Check {
  const pkg = toolPackages[tool] ?? tool;
  const found = which(tool);
  return { name: `tool ${tool}`, ok: !!found, detail: found, fix: `install it: sudo apt-get install ${pkg} (or run sudo vagrant/provision.sh)` };
}

export function namespaceCheck(ns: string): Check {
  return { name: `${ns} namespaces`, ok: existsSync(`/proc/self/ns/${ns}`), fix: `this kernel lacks ${ns} namespaces; use the workshop's Vagrant VM` };
}

export type CgroupMode = 'v2' | 'v1' | 'hybrid' | 'none';

const CGROUP2_SUPER_MAGIC = 0x63677270;
const TMPFS_MAGIC = 0x01021994;

/** statfs on /sys/fs/cgroup says which cgroup layout the host booted with. */
export function cgroupMode(): CgroupMode {
  try {
    const t = statfsSync('/sys/fs/cgroup').type;
    if (t === CGROUP2_SUPER_MAGIC) return 'v2';
    if (t === TMPFS_MAGIC) {
      try {
        if (statfsSync('/sys/fs/cgroup/unified').type === CGROUP2_SUPER_MAGIC) return 'hybrid';
      } catch {}
      return 'v1';
    }
  } catch {}
  return 'none';
}

export function cgroupCheck(): Check {
  const mode = cgroupMode();
  return { name: 'cgroups', ok: mode !== 'none', detail: mode, fix: 'mount cgroup2 on /sys/fs/cgroup (boot with systemd, or: mount -t cgroup2 none /sys/fs/cgroup)' };
}

/** A kernel feature is there if it is built in or its module exists. */
export function kernelFeatureCheck(name: string, config: string, module: string): Check {
  let ok = existsSync(`/sys/module/${module}`);
  if (!ok) {
    try {
      const release = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
      const builtin = readFileSync(`/lib/modules/${release}/modules.builtin`, 'utf8');
      const dep = readFileSync(`/lib/modules/${release}/modules.dep`, 'utf8');
      ok = builtin.includes(`/${module}.ko`) || dep.includes(`/${module}.ko`);
    } catch {}
  }
  if (!ok) ok = kernelConfig().get(config) === 'y' || kernelConfig().get(config) === 'm';
  return { name: `kernel ${name}`, ok, fix: `load it: sudo modprobe ${module} (kernel option ${config})` };
}

let config: Map<string, string> | undefined;
function kernelConfig(): Map<string, string> {
  if (config) return config;
  config = new Map();
  let text = '';
  try {
    text = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
  } catch {
    try {
      const release = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
      text = readFileSync(`/boot/config-${release}`, 'utf8');
    } catch {}
  }
  for (const m of text.matchAll(/^(CONFIG_\w+)=(\S+)$/gm)) config.set(m[1]!, m[2]!);
  return config;
}

/** The dynamic loader's usual directories, with this architecture's Debian multiarch ones. */
function libraryDirs(): string[] {
  const multiarch = ({ x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', riscv64: 'riscv64-linux-gnu' } as Record<string, string>)[process.arch];
  const dirs = ['/lib', '/usr/lib', '/lib64', '/usr/lib64', '/usr/local/lib'];
  return multiarch ? [`/lib/${multiarch}`, `/usr/lib/${multiarch}`, ...dirs] : dirs;
}

/** A shared library a step loads through koffi (dlopen), e.g. step 08's libseccomp.so.2 from Debian's libseccomp2. */
export function libraryCheck(soname: string, pkg: string): Check {
  const found = soname.includes('/') ? (existsSync(soname) ? soname : undefined) : libraryDirs().map((d) => join(d, soname)).find((p) => existsSync(p));
  return { name: `library ${soname}`, ok: !!found, detail: found, fix: `install it: sudo apt-get install ${pkg} (or run sudo vagrant/provision.sh)` };
}

/** Stops with the fix line of the first failing check. */
export function requireChecks(...checks: Check[]): void {
  for (const c of checks) {
    if (!c.ok) throw new JailError(`${c.name}: not available`, c.fix);
  }
}

export function requireRoot(what = 'this step'): void {
  if (!isRoot()) throw new JailError(`${what} needs root: namespaces, mounts and cgroups are root's tools`, 'run it with sudo, e.g. sudo npm run step 4');
}

export function requireTools(...tools: string[]): void {
  requireChecks(...tools.map(toolCheck));
}

export function allChecks(): Check[] {
  return [
    rootCheck(),
    ...['uts', 'pid', 'mnt', 'net', 'ipc', 'user', 'cgroup'].map(namespaceCheck),
    cgroupCheck(),
    kernelFeatureCheck('veth pairs', 'CONFIG_VETH', 'veth'),
    kernelFeatureCheck('bridges', 'CONFIG_BRIDGE', 'bridge'),
    kernelFeatureCheck('overlayfs', 'CONFIG_OVERLAY_FS', 'overlay'),
    ...Object.keys(toolPackages).map(toolCheck),
    libraryCheck('libseccomp.so.2', 'libseccomp2'),
  ];
}
