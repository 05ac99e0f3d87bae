// Step 01: the cell. A Linux distribution is a kernel plus a file system;
// a container brings only the file system and borrows the host's kernel.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { exchangePaths } from '../../lib/libc.ts';
import { explain, heading, ok, showCommand } from '../../lib/output.ts';
import { requireTools, which } from '../../lib/preflight.ts';
import { upstreamResolvConf } from '../../lib/resolv.ts';
import { run } from '../../lib/sh.ts';
import { ensureDir, isAlive, jailCache } from '../../lib/state.ts';

/** The directories the lesson creates: what programs expect to find at /. */
export const ROOTFS_DIRS = ['bin', 'dev', 'etc', 'lib', 'usr/bin', 'usr/sbin', 'sbin', 'var', 'proc', 'tmp', 'home', 'root', 'mnt', 'sys', 'run'];

/**
 * Builds into a sibling temp dir and swaps it in at the end, so that an
 * interrupted build never leaves a half tree where a rootfs should be.
 */
async function buildAtomically(dest: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  ensureDir(dirname(dest));
  removeStaleBuilds(dest);
  const tmp = `${dest}.building-${process.pid}`;
  await using cleanup = new CleanupStack();
  cleanup.defer(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  const interrupted = () => cleanup.unwind().then(() => process.exit(130));
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  try {
    await fill(tmp);
    if (existsSync(dest)) {
      exchangePaths(tmp, dest); // renameat2(RENAME_EXCHANGE): old and new swap in one step
    } else {
      renameSync(tmp, dest);
    }
  } finally {
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
  }
}

/** A build killed with SIGKILL leaves its temp dir; the next build removes it. */
function removeStaleBuilds(dest: string): void {
  const prefix = basename(dest) + '.building-';
  for (const entry of readdirSync(dirname(dest))) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number(entry.slice(prefix.length));
    if (pid !== process.pid && !isAlive(pid)) rmSync(join(dirname(dest), entry), { recursive: true, force: true });
  }
}


/** The busybox applets, as paths relative to / (bin/sh, usr/bin/env …). */
function busyboxApplets(busybox: string): string[] {
  return execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

export function findStaticBusybox(): string {
  requireTools('busybox');
  for (const candidate of ['/bin/busybox', '/usr/bin/busybox', which('busybox')!]) {
    if (!candidate || !existsSync(candidate)) continue;
    const head = readFileSync(candidate).subarray(0, 4096).toString('latin1');
    // a dynamically linked ELF names its interpreter (ld-linux…) near the start
    if (!head.includes('ld-linux') && !head.includes('/lib64/ld')) return candidate;
  }
  throw new JailError('the busybox on this machine is not statically linked', 'install busybox-static: sudo apt-get install busybox-static');
}

/** The small /etc a shell and its tools expect. */
function writeEtc(root: string, hostname: string): void {
  const etc = join(root, 'etc');
  writeFileSync(join(etc, 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(join(etc, 'group'), 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
  writeFileSync(join(etc, 'hostname'), hostname + '\n');
  writeFileSync(join(etc, 'hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n::1\tlocalhost ip6-localhost\n`);
  writeFileSync(join(etc, 'resolv.conf'), upstreamResolvConf().text);
  writeFileSync(join(etc, 'profile'), 'export PS1="\\u@\\h:\\w\\$ "\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n');
}

export async function buildBusyboxRootfs(dest: string): Promise<void> {
  const busybox = findStaticBusybox();
  heading(`Building a busybox root filesystem in ${dest}`);
  explain('A root filesystem is just a directory tree with the files programs expect at /.');
  showCommand(`mkdir -p ${ROOTFS_DIRS.join(' ')}`);
  showCommand(`cp ${busybox} bin/busybox`);
  explain(`busybox is one static binary that is ${busyboxApplets(busybox).length} tools; each tool is a link to it.`);
  explain('Careful: `busybox --install -s bin` would link to the HOST path of busybox;');
  explain('inside the jail the links must point to /bin/busybox, the copy in the rootfs.');
  showCommand('for app in $(bin/busybox --list-full); do ln -s /bin/busybox $app; done');
  await buildAtomically(dest, async (tmp) => {
    for (const d of ROOTFS_DIRS) mkdirSync(join(tmp, d), { recursive: true });
    chmodSync(join(tmp, 'tmp'), 0o1777);
    chmodSync(join(tmp, 'root'), 0o700);
    copyFileSync(busybox, join(tmp, 'bin/busybox'));
    chmodSync(join(tmp, 'bin/busybox'), 0o755);
    for (const applet of busyboxApplets(busybox)) {
      const link = join(tmp, applet);
      if (existsSync(link)) continue;
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync('/bin/busybox', link);
    }
    writeEtc(tmp, 'jail');
  });
  explain('busybox-static needs no shared libraries, so lib/ stays empty (the lesson copies lib/ for a dynamic one).');
  ok(`built ${dest} (${sizeOf(dest)})`);
}

export function sizeOf(dir: string): string {
  try {
    return execFileSync('du', ['-sh', dir], { encoding: 'utf8' }).split('\t')[0]!;
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------------------
// Debian with debootstrap

export interface DebianOptions {
  suite?: string;
  mirror?: string;
  /** Packages beyond minbase: the tools the lesson runs inside. */
  include?: string[];
}

/** minbase has no ps or ip; the lesson runs both inside, and step 07 runs sshd. */
export const DEBIAN_INCLUDE = ['procps', 'iproute2', 'iputils-ping', 'openssh-server'];

/**
 * The suite and mirror the host's apt already uses, so a Debian VM builds a
 * Debian jail from the mirror it can reach. Reads one-line and deb822 sources.
 */
export function hostAptSource(): { suite: string; mirror: string } | undefined {
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d')) files.push(join('/etc/apt/sources.list.d', f));
  } catch {}
  const entries: { uri: string; suite: string }[] = [];
  for (const file of files) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => stanza.match(new RegExp(`^${name}:\\s*(.+)$`, 'mi'))?.[1]?.trim().split(/\s+/) ?? [];
        if (!field('Types').includes('deb')) continue;
        for (const uri of field('URIs')) for (const suite of field('Suites')) entries.push({ uri, suite });
      }
    } else {
      for (const m of text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/gm)) entries.push({ uri: m[1]!, suite: m[2]! });
    }
  }
  // the distribution's main archive: a plain suite name (no -updates, -security)
  const main = entries.find((e) => /^[a-z]+$/.test(e.suite) && /^https?:\/\//.test(e.uri) && !/security/.test(e.uri));
  return main && { suite: main.suite, mirror: main.uri };
}

function debianCacheDir(suite: string, include: string[]): string {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const key = `${suite}-${arch}-minbase-${include.slice().sort().join(',')}`;
  let h = 0;
  for (const ch of key) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return join(jailCache(), 'debootstrap', `${suite}-${arch}-${h.toString(16)}`);
}

export async function buildDebianRootfs(dest: string, opts: DebianOptions = {}): Promise<void> {
  const source = hostAptSource();
  const suite = opts.suite ?? source?.suite;
  const mirror = opts.mirror ?? source?.mirror;
  if (!suite || !mirror) {
    throw new JailError('cannot tell which Debian/Ubuntu suite and mirror this host uses', 'pass them: npm run step 1 -- --debian --suite bookworm --mirror http://deb.debian.org/debian');
  }
  if (!/^[a-z][a-z0-9-]*$/.test(suite)) throw new JailError(`'${suite}' is not a suite name`, 'e.g. --suite bookworm', 2);
  const include = opts.include ?? DEBIAN_INCLUDE;
  const cache = debianCacheDir(suite, include);
  heading(`Building a Debian (${suite}) root filesystem in ${dest}`);
  if (!existsSync(join(cache, 'etc/debian_version'))) {
    requireTools('debootstrap', 'flock');
    explain('debootstrap downloads a minimal set of .deb packages and unpacks them into a directory.');
    explain('This takes a few minutes once; the result is cached, so later builds are a copy.');
    const args = ['--variant=minbase', `--include=${include.join(',')}`, suite, `${cache}.partial`, mirror];
    showCommand(`debootstrap ${args.join(' ')}`);
    ensureDir(dirname(cache));
    // one debootstrap per cache entry at a time; whoever waited finds it done
    const script = 'c=$1; shift; [ -e "$c/etc/debian_version" ] && exit 0; rm -rf "$c.partial" && debootstrap "$@" && rm -rf "$c" && mv "$c.partial" "$c"';
    const hint = 'check that the mirror is reachable from this machine (does apt-get update work?), or pass --mirror';
    await run(['flock', `${cache}.lock`, 'bash', '-c', script, 'debootstrap', cache, ...args], hint);
  } else {
    explain(`Using the cached debootstrap result in ${cache}.`);
  }
  showCommand(`cp -a ${cache} ${dest}`);
  await buildAtomically(dest, async (tmp) => {
    await run(['cp', '-a', '--reflink=auto', cache, tmp]);
    writeFileSync(join(tmp, 'etc/hostname'), 'jail\n');
    writeFileSync(join(tmp, 'etc/resolv.conf'), upstreamResolvConf().text);
    // debootstrap made sshd host keys once, in the cache; every copy sharing
    // them would let one jail impersonate another. Each makes its own (step 07).
    const ssh = join(tmp, 'etc/ssh');
    if (existsSync(ssh)) for (const f of readdirSync(ssh)) if (f.startsWith('ssh_host_')) rmSync(join(ssh, f));
  });
  ok(`built ${dest} (${sizeOf(dest)}), Debian ${readFileSync(join(dest, 'etc/debian_version'), 'utf8').trim()}`);
}

/** Stops with one sentence when a rootfs is missing or is not one. */
export function requireRootfs(dir: string): string {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EACCES') {
      throw new JailError(`rootfs ${dir} is out of your reach (permission denied on the way to it)`, 'the workshop keeps its rootfs trees for root and the jails only (step 08): copy one you may read, e.g. sudo cp -a DIR /tmp/mine && sudo chown -R $USER /tmp/mine, and pass --rootfs /tmp/mine');
    }
  }
  if (!isDir) {
    throw new JailError(`rootfs ${dir} does not exist`, 'build one first: sudo npm run step 1 (or step 1 -- --debian), or pass --rootfs DIR');
  }
  if (!existsSync(join(dir, 'bin/sh'))) {
    throw new JailError(`${dir} has no /bin/sh: it does not look like a root filesystem`, 'rebuild it with sudo npm run step 1');
  }
  return dir;
}
