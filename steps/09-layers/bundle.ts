// Step 09: an OCI runtime bundle, what runc (and crun, and containerd's
// shims underneath Docker) actually runs: a directory with rootfs/ and a
// config.json (the runtime-spec). The image is gone by then: its layers are
// applied one on top of the other, bottom first, whiteouts carried out, into
// one flat tree, as `docker export` gives it. And config.json is our jail,
// written down as data: every namespace, mount, limit and lock that steps
// 03-08 made by hand is one field here.
//   step 03 namespaces        linux.namespaces, uidMappings/gidMappings (user)
//   step 04 /proc /sys /dev   mounts (proc, sysfs ro, a tmpfs /dev with devpts and shm)
//   step 06 limits            linux.resources (memory, pids, cpu, blockIO, devices)
//   step 08 locks             process.capabilities, noNewPrivileges, linux.seccomp,
//                             linux.maskedPaths / readonlyPaths, the device rules
import { accessSync, constants, lchownSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import type { Namespace } from '../../lib/spec.ts';
import { ALL_NAMESPACES } from '../03-namespaces/namespaces.ts';
import type { Limits } from '../06-cgroups/limits.ts';
import { formatBytes } from '../06-cgroups/flags.ts';
import { jailIdRanges, type IdRanges } from '../03-namespaces/idrange.ts';
import { DEFAULT_LOCKS, deviceRules, type Locks } from '../08-hardening/jail.ts';
import { MASKED_PATHS, READONLY_PATHS } from '../08-hardening/paths.ts';
import { DENY_LIST, NAMESPACE_FLAGS, ptraceBypassesSeccomp } from '../08-hardening/seccomp.ts';
import { buildDirAtomically } from './atomic-dir.ts';
import { extractLayer, layerTar } from './layers.ts';
import { checkImageName, ensureImage, layerDir, type Image } from './store.ts';

export interface BundleOptions {
  /** argv; empty: the image's cmd. */
  command?: string[];
  /** Default 'jail', as step 01's /etc/hostname says. */
  hostname?: string;
  limits?: Limits;
  /** Step 08's locks; default all on, as step 08's jail has them. */
  locks?: Locks;
  /** process.terminal: runc then gives the process a pty of its own (needs a terminal to run from). */
  terminal?: boolean;
}

/** util-linux's names (lib/spec.ts) -> the runtime-spec's. */
const OCI_NAMESPACE: Record<Namespace, string> = { uts: 'uts', pid: 'pid', mount: 'mount', net: 'network', ipc: 'ipc', user: 'user' };

/** The CFS period of step 06's --cpus: the quota is spent within each 100 ms, docker's default too. */
const CPU_PERIOD_US = 100_000;

/** 'c 1:3 rwm' (step 06's v1 rule) -> the runtime-spec's device rule; '*' is any number. */
function deviceRule(rule: string): object {
  const [type, numbers = '*:*', access = 'rwm'] = rule.trim().split(/\s+/);
  const [major, minor] = numbers.split(':');
  const n = (v?: string) => (v === undefined || v === '*' ? undefined : Number(v));
  return { allow: true, type, major: n(major), minor: n(minor), access };
}

/** Step 06's Limits in the runtime-spec's words. runc writes the same cgroup files step 06 does. */
export function resourcesOf(limits: Limits = {}): Record<string, unknown> {
  // deny every device first, then allow: runc adds its own minimal /dev list (null, zero, tty …) to these
  const r: Record<string, unknown> = { devices: [{ allow: false, access: 'rwm' }, ...(limits.devices ?? []).map(deviceRule)] };
  // swap is memory+swap in the runtime-spec: equal to the limit means no swap at all
  if (limits.memory !== undefined) r.memory = { limit: limits.memory, swap: limits.memory };
  if (limits.pids !== undefined) r.pids = { limit: limits.pids };
  if (limits.cpus !== undefined || limits.cpuset !== undefined) {
    r.cpu = {
      ...(limits.cpus !== undefined && { quota: Math.round(limits.cpus * CPU_PERIOD_US), period: CPU_PERIOD_US }),
      ...(limits.cpuset !== undefined && { cpus: limits.cpuset }),
    };
  }
  const rates = (list = limits.ioReadBps ?? []) => list.map((d) => ({ major: Number(d.dev.split(':')[0]), minor: Number(d.dev.split(':')[1]), rate: d.bytes }));
  if (limits.ioReadBps?.length || limits.ioWriteBps?.length) r.blockIO = { throttleReadBpsDevice: rates(limits.ioReadBps), throttleWriteBpsDevice: rates(limits.ioWriteBps) };
  return r;
}

/** CLONE_NEWTIME's bit: unshare(2) only, which is why step 08's NAMESPACE_FLAGS (clone's too) lacks it. */
const CLONE_NEWTIME = 0x00000080;
const EPERM = 1;
const ENOSYS = 38;

/**
 * Step 08's deny list in the runtime-spec's words: default ALLOW, each rule
 * ERRNO. runc hands it to the same libseccomp, and skips the calls this
 * architecture lacks as step 08's buildFilter does. A new namespace is
 * refused flag by flag: "(flags & FLAG) == FLAG", one rule each.
 */
export function seccompOf(keep: readonly string[]): object {
  const syscalls: object[] = [];
  const rules = [...DENY_LIST];
  if (ptraceBypassesSeccomp()) rules.push({ calls: ['ptrace'], why: 'before 4.8, a tracer could rewrite a call after the filter allowed it', unless: ['CAP_SYS_PTRACE'] });
  for (const rule of rules) {
    if (rule.unless?.some((c) => keep.includes(c))) continue;
    syscalls.push({ names: rule.calls, action: 'SCMP_ACT_ERRNO', errnoRet: rule.errno === 'ENOSYS' ? ENOSYS : EPERM });
  }
  if (!keep.includes('CAP_SYS_ADMIN')) {
    const flagArg = (index: number, bit: number) => [{ index, value: bit, valueTwo: bit, op: 'SCMP_CMP_MASKED_EQ' }];
    const cloneFlags = process.arch === 's390x' ? 1 : 0;
    for (const bit of Object.values(NAMESPACE_FLAGS)) syscalls.push({ names: ['clone'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: flagArg(cloneFlags, bit) });
    for (const bit of [...Object.values(NAMESPACE_FLAGS), CLONE_NEWTIME]) syscalls.push({ names: ['unshare'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: flagArg(0, bit) });
  }
  return { defaultAction: 'SCMP_ACT_ALLOW', syscalls };
}

/** Step 04's /proc, read-only /sys and minimal /dev, as runc's mount list. */
const MOUNTS = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  // not devtmpfs, which is the host's every disk: a tmpfs, which runc fills with the harmless nodes
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  // a devpts of our own; gid=5 is the tty group, which owns terminals; newinstance: not the host's ptys
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  // the jail's own cgroup, read-only: it may read its limits, not lift them
  { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
];

/** 'KEY=value' lines, later ones winning, in first-seen order. */
function mergeEnv(...lists: string[][]): string[] {
  const env = new Map<string, string>();
  for (const line of lists.flat()) env.set(line.split('=')[0]!, line);
  return [...env.values()];
}

/** config.json: the jail of steps 03-08 as data. `ranges` is the user namespace's, when the locks want one. */
export function runtimeSpec(image: Image, opts: BundleOptions, ranges?: IdRanges): Record<string, any> {
  const locks = opts.locks ?? DEFAULT_LOCKS;
  const hostname = opts.hostname ?? 'jail';
  const namespaces = ALL_NAMESPACES.filter((n) => n !== 'user' || (locks.userns && ranges));
  const caps = [...locks.caps];
  // step 08's device lock is a step 06 limit: the minimal /dev's nodes, and no other
  const limits = { ...opts.limits, devices: opts.limits?.devices ?? deviceRules(locks) };
  const linux: Record<string, unknown> = {
    namespaces: namespaces.map((n) => ({ type: OCI_NAMESPACE[n] })),
    resources: resourcesOf(limits),
  };
  if (ranges && locks.userns) {
    linux.uidMappings = [{ containerID: 0, hostID: ranges.uid.base, size: ranges.uid.count }];
    linux.gidMappings = [{ containerID: 0, hostID: ranges.gid.base, size: ranges.gid.count }];
  }
  if (locks.maskPaths) Object.assign(linux, { maskedPaths: MASKED_PATHS, readonlyPaths: READONLY_PATHS });
  if (locks.seccomp) linux.seccomp = seccompOf(caps);
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: opts.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args: opts.command?.length ? opts.command : image.config.cmd,
      env: mergeEnv(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'TERM=xterm', `HOSTNAME=${hostname}`], image.config.env),
      cwd: image.config.workingDir || '/',
      // no inheritable and no ambient set: as step 08 does, after CVE-2022-24769
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: locks.noNewPrivs,
    },
    root: { path: 'rootfs', readonly: false },
    hostname,
    mounts: MOUNTS,
    linux,
  };
}

/**
 * The image's layers applied bottom first into one tree: each layer's tar
 * (layers.ts layerTar), extracted with its whiteouts carried out. With a
 * user namespace every owner is shifted into the jail's range, so that
 * root inside owns what root owned in the image: the bundle's rootfs is a
 * private copy, so shifting it costs nothing extra (step 08 needed an
 * idmapped mount or a chowned copy for a shared one).
 */
export async function flattenLayers(image: Image, rootfs: string, ranges?: IdRanges): Promise<void> {
  const shift = ranges ? { uid: ranges.uid.base, gid: ranges.gid.base } : { uid: 0, gid: 0 };
  mkdirSync(rootfs, { mode: 0o755 });
  lchownSync(rootfs, shift.uid, shift.gid);
  for (const id of image.layers) {
    showCommand(`tar -C ${layerDir(id)} -c . | tar -C rootfs -x   # then: for each .wh.NAME, rm -rf NAME`);
    await extractLayer(layerTar(layerDir(id)), rootfs, { form: 'applied', shift });
  }
}

/** A user namespace's root must be able to walk down to rootfs/: every directory above needs o+x. */
function unsearchableParent(dir: string): string | undefined {
  for (let d = dirname(dir); ; d = dirname(d)) {
    try {
      if (!(statSync(d).mode & 0o001)) return d;
    } catch {}
    if (d === '/') return undefined;
  }
}

/** The image as a runc bundle in DIR (new or empty): rootfs/ and config.json. */
export async function exportBundle(name: string, dir: string, opts: BundleOptions = {}): Promise<{ dir: string; spec: Record<string, any> }> {
  checkImageName(name);
  const image = await ensureImage(name);
  const locks = opts.locks ?? DEFAULT_LOCKS;
  const ranges = locks.userns ? jailIdRanges() : undefined;
  const spec = runtimeSpec(image, opts, ranges);
  const target = await buildDirAtomically(dir, 'bundle', async (tmp) => {
    await flattenLayers(image, join(tmp, 'rootfs'), ranges);
    writeFileSync(join(tmp, 'config.json'), JSON.stringify(spec, null, 2) + '\n');
  });
  const blocked = ranges && unsearchableParent(target);
  if (blocked) warn(`${blocked} is closed to others (no o+x): the jail's root (uid ${ranges!.uid.base} outside) cannot reach rootfs/ through it; chmod o+x ${blocked}, or put the bundle elsewhere`);
  return { dir: target, spec };
}

export async function exportBundleCommand(name: string, dir: string, command: string[], limits?: Limits, opts: Omit<BundleOptions, 'command' | 'limits'> = {}): Promise<number> {
  checkImageName(name);
  heading(`Exporting image ${name} as an OCI runtime bundle in ${dir}`);
  explain('rootfs/: the layers applied one on top of the other, whiteouts carried out: one flat tree.');
  explain('config.json: this workshop\'s jail as data: namespaces, mounts, limits, capabilities, seccomp.');
  const { dir: target, spec } = await exportBundle(name, dir, { ...opts, command, limits });
  const res = spec.linux.resources;
  const said = [
    spec.linux.namespaces.map((n: { type: string }) => n.type).join(','),
    res.memory && `memory ${formatBytes(res.memory.limit)}`,
    res.pids && `pids ${res.pids.limit}`,
    res.cpu?.quota && `cpu ${res.cpu.quota}/${res.cpu.period}`,
    `${spec.process.capabilities.bounding.length} capabilities`,
    spec.linux.seccomp && 'seccomp',
  ].filter(Boolean);
  ok(`${target}: runs ${JSON.stringify(spec.process.args)} with ${said.join(', ')}`);
  explain('runc runs it (the id names its state and its cgroup; runc delete removes both):');
  showCommand(`sudo runc run --bundle ${target} ${name}-1`);
  showCommand(`sudo runc delete --force ${name}-1   # if it was killed`);
  if (!spec.process.terminal) explain('For an interactive shell set "terminal": true in config.json (runc then needs a terminal to run from).');
  try {
    accessSync(join(target, 'rootfs/bin/sh'), constants.F_OK);
  } catch {
    warn('the rootfs has no /bin/sh: give the bundle a command that the image has');
  }
  return 0;
}
