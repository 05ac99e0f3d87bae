// The lab's host half of each escape: what it makes for an attempt to find,
// and how it takes it back. A marker file holds a random secret that only a
// jail that got out can read; baj-lab0 is a link of the lab's own whose MTU
// only a jail that got out can change; a key in root's user keyring waits
// for a jail to read it. Every undo goes on the run's cleanup stack the
// moment the thing exists. And each fixture checks the attempt's claim from
// the host's side: the jail's word alone proves nothing.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, realpathSync, rmdirSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { explain, showCommand } from '../../lib/output.ts';
import { run, succeeds } from '../../lib/sh.ts';
import { ensureDir, jailHome } from '../../lib/state.ts';
import type { EscapeResult, Fixture, Params } from './escapes.ts';
import { describeDiskStart } from './escapes-host-fs.ts';
import { addUserKey, keyctl, KEYCTL, KEY_SPEC_USER_KEYRING, LAB_LINK, LAB_MTU } from './escapes-shared.ts';

export interface Prepared {
  /** Passed to the attempt inside the jail. */
  params: Params;
  /** The host's verdict on the attempt's claim. */
  confirm?(result: EscapeResult): EscapeResult | Promise<EscapeResult>;
}
/** A fixture this host cannot offer makes the escape "n/a" here, with the reason. */
export type Preparation = Prepared | { skip: string };

/** Where the lab's markers live while a run lasts: the workshop's own state dir. */
export const labDir = (): string => join(jailHome(), 'lab');

export async function prepareFixture(fixture: Fixture | undefined, rootfs: string, cleanup: CleanupStack): Promise<Preparation> {
  const skip = fixtureUnavailable(fixture, rootfs);
  if (skip) return { skip };
  switch (fixture) {
    case 'marker':
      return makeMarker(cleanup);
    case 'ext4-marker':
      return makeMarkerOnRootfsFilesystem(cleanup);
    case 'link':
      return makeLabLink(cleanup);
    case 'key':
      return addLabKey(cleanup);
    case 'disk':
      return diskUnderRootfs(rootfs);
    default:
      return { params: {} };
  }
}

/** Why this host cannot offer a fixture (the escape is n/a here), or undefined. Makes nothing. */
export function fixtureUnavailable(fixture: Fixture | undefined, rootfs: string): string | undefined {
  switch (fixture) {
    case 'ext4-marker': {
      const type = statfsSync(existingAncestor(rootfs)).type;
      if (type !== EXT4_SUPER_MAGIC) return `the rootfs is not on ext2/3/4 (filesystem magic 0x${type.toString(16)}): the attempt knows only ext4's root handle`;
      if (statSync(existingAncestor(labDir())).dev !== statSync(existingAncestor(rootfs)).dev) return `${labDir()} and the rootfs are on different filesystems`;
      return undefined;
    }
    case 'disk':
      return findDisk(rootfs).skip;
    case 'key':
      return existsSync('/proc/keys') ? undefined : 'this kernel has no key store (CONFIG_KEYS)';
    case 'cgroup-v1':
      return v1Hierarchies().length ? undefined : 'the host has no cgroup v1 hierarchy (pure v2): release_agent exists only in v1';
    case 'sysrq':
      return existsSync('/proc/sysrq-trigger') ? undefined : 'this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ is off)';
    case 'userns':
      return userNamespacesUnavailable();
    default:
      return undefined;
  }
}

/**
 * Whether the host itself can make a user namespace. It cannot inside a
 * chroot (EPERM: the kernel refuses CLONE_NEWUSER to a chrooted process), or
 * where user.max_user_namespaces is 0.
 */
function userNamespacesUnavailable(): string | undefined {
  const r = spawnSync('unshare', ['--user', 'true'], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  return `the host itself cannot make a user namespace (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}): in a chroot, or user.max_user_namespaces is 0`;
}

/** The rootfs may not be built yet when a test file asks: its nearest existing parent is on the same filesystem, as a rule. */
function existingAncestor(path: string): string {
  while (!existsSync(path)) path = dirname(path);
  return path;
}

const EXT4_SUPER_MAGIC = 0xef53; // ext2 and ext3 share it

// ---------------------------------------------------------------------------
// A marker file: a random secret that only a jail that got out can read

interface Marker extends Prepared {
  path: string;
}

function makeMarker(cleanup: CleanupStack): Marker {
  const dir = labDir();
  if (!existsSync(dir)) {
    ensureDir(jailHome()); // with its usual mode: a recursive mkdir below would make it 0700, out of the jails' reach
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    cleanup.defer(`rmdir ${dir}`, () => readdirSync(dir).length === 0 && rmdirSync(dir));
  }
  const secret = randomBytes(12).toString('hex');
  const path = join(dir, `marker-${randomBytes(3).toString('hex')}`);
  showCommand(`echo ${secret} > ${path}     # on the host: the secret to find`);
  writeFileSync(path, secret + '\n', { mode: 0o600, flag: 'wx' });
  cleanup.defer(`rm ${path}`, () => rmSync(path, { force: true }));
  return {
    path,
    params: { hostPath: path },
    confirm: (r) => (!r.out || r.evidence.includes(secret) ? r : { ...r, out: false, evidence: `${r.evidence} — not the marker's secret` }),
  };
}

/**
 * A file handle is relative to a filesystem, not to a path: the attempt needs
 * the marker's path from the root of the filesystem that holds the rootfs.
 * /proc/self/mountinfo says where that filesystem is mounted and which of its
 * directories the mount shows (field 4, "/" for a whole filesystem).
 */
function makeMarkerOnRootfsFilesystem(cleanup: CleanupStack): Prepared {
  const marker = makeMarker(cleanup);
  const onFs = pathOnFilesystem(marker.path);
  return { ...marker, params: { ...marker.params, marker: onFs } };
}


function pathOnFilesystem(path: string): string {
  const real = realpathSync(path);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' '))
    .map((f) => ({ root: unescapeMount(f[3]!), point: unescapeMount(f[4]!) }))
    .filter((m) => m.point === '/' || real === m.point || real.startsWith(m.point + '/'));
  // the mount that shows `real` is the one with the longest mount point (the last of those, if stacked)
  const mount = mounts.reduce((a, b) => (b.point.length >= a.point.length ? b : a));
  return join(mount.root, relative(mount.point, real)).replace(/^\/+/, '');
}
const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

// ---------------------------------------------------------------------------
// baj-lab0: a link of the lab's own on the host, the only one an attempt touches

async function makeLabLink(cleanup: CleanupStack): Promise<Prepared> {
  if (await succeeds(['ip', 'link', 'show', 'dev', LAB_LINK])) await run(['ip', 'link', 'del', 'dev', LAB_LINK]); // a killed run's, ours by name
  showCommand(`ip link add ${LAB_LINK} type dummy     # on the host: the link to change`);
  if (!(await succeeds(['ip', 'link', 'add', LAB_LINK, 'type', 'dummy']))) {
    // a kernel without the dummy driver (it is often a module); an empty bridge, down, with no ports, is as inert
    explain('this kernel has no dummy driver: an empty bridge (down, no ports) serves as well');
    showCommand(`ip link add ${LAB_LINK} type bridge`);
    await run(['ip', 'link', 'add', LAB_LINK, 'type', 'bridge']);
  }
  cleanup.defer(`ip link del ${LAB_LINK}`, () => run(['ip', 'link', 'del', 'dev', LAB_LINK]));
  const before = linkMtu();
  return {
    params: { link: LAB_LINK },
    confirm(r) {
      const after = linkMtu();
      const changed = after === LAB_MTU && before !== LAB_MTU;
      return { ...r, out: changed, evidence: `${r.evidence}; the host sees ${LAB_LINK} mtu ${before} -> ${after}` };
    },
  };
}

const linkMtu = (): number => Number(readFileSync(`/sys/class/net/${LAB_LINK}/mtu`, 'utf8'));

// ---------------------------------------------------------------------------
// A key in root's user keyring, readable by uid 0 — and gone by itself in ten minutes

function addLabKey(cleanup: CleanupStack): Prepared {
  const name = `baj-lab:${randomBytes(3).toString('hex')}`;
  const secret = randomBytes(12).toString('hex');
  showCommand(`keyctl add user ${name} ${secret} @u     # on the host, as root: the key to find`);
  const id = addUserKey(name, secret, KEY_SPEC_USER_KEYRING);
  cleanup.defer(`keyctl unlink ${id} @u`, async () => {
    keyctl(KEYCTL.UNLINK, id, KEY_SPEC_USER_KEYRING);
    keyctl(KEYCTL.INVALIDATE, id);
    // an invalidated key is unusable at once, but listed until the kernel's key collector has run: wait for it
    const listed = () => labKeys().some((l) => parseInt(l, 16) === id);
    for (let i = 0; i < 200 && listed(); i++) await new Promise((r) => setTimeout(r, 10));
  });
  // a killed lab leaves nothing for long: the kernel drops the key at its timeout
  keyctl(KEYCTL.SET_TIMEOUT, id, 600);
  // the possessor may do all; uid 0 may view, read and search it
  keyctl(KEYCTL.SETPERM, id, 0x3f0b0000);
  return {
    params: { key: name },
    confirm: (r) => (!r.out || r.evidence.includes(secret) ? r : { ...r, out: false, evidence: `${r.evidence} — not the lab's secret` }),
  };
}

/** The lab's keys still in root's keyrings (the test's check that none is left). */
export function labKeys(): string[] {
  try {
    return readFileSync('/proc/keys', 'utf8').split('\n').filter((l) => l.includes(' baj-lab:'));
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------
// The disk under the rootfs, as the host reads it

/** The block device under the rootfs (stat's st_dev), and what the host itself reads at its start. */
function findDisk(rootfs: string): { skip?: string; disk?: string; host?: string } {
  const dev = statSync(existingAncestor(rootfs), { bigint: true }).dev;
  const [major, minor] = [Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)), Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn))];
  if (major === 0) return { skip: `the rootfs is on a virtual filesystem (device 0:${minor}), with no disk behind it` };
  const uevent = `/sys/dev/block/${major}:${minor}/uevent`;
  if (!existsSync(uevent)) return { skip: `device ${major}:${minor} under the rootfs is not a block device` };
  const disk = `/dev/${/^DEVNAME=(.*)$/m.exec(readFileSync(uevent, 'utf8'))?.[1] ?? '?'}`;
  try {
    return { disk: `${disk} (${major}:${minor})`, host: describeDiskStart(readDiskStart(disk)) };
  } catch (err) {
    // some machines (sandboxed VMs) refuse even the host's root a raw read of its disk
    return { skip: `the host itself may not read ${disk} (${major}:${minor}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
}

function diskUnderRootfs(rootfs: string): Prepared {
  const { disk, host } = findDisk(rootfs);
  explain(`the rootfs is on ${disk}; the host reads its start as: ${host}`);
  return {
    params: {},
    confirm: (r) =>
      !r.out || !host ? r : r.evidence.includes(host) ? { ...r, evidence: `${r.evidence} — what the host reads from ${disk}` } : { ...r, out: false, evidence: `${r.evidence} — but the host reads ${host} from ${disk}` },
  };
}

/** The host reads its own disk's first 2 KiB to compare: O_RDONLY, as the jail does. */
function readDiskStart(path: string): Buffer {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    const buf = Buffer.alloc(2048);
    return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0));
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// cgroup v1

/** The host's v1 hierarchies with controllers (/proc/cgroups, hierarchy > 0). */
export function v1Hierarchies(): string[] {
  const ids = readFileSync('/proc/cgroups', 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(/\s+/))
    .filter(([, h, , enabled]) => h !== '0' && enabled === '1')
    .map(([, h]) => h!);
  return [...new Set(ids)];
}

/** Every v1 release_agent the host has, path and content: the test's proof that none was written. */
export function hostReleaseAgents(): Record<string, string> {
  const found: Record<string, string> = {};
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || f[sep + 1] !== 'cgroup') continue;
    const file = join(unescapeMount(f[4]!), 'release_agent');
    try {
      found[file] = readFileSync(file, 'utf8');
    } catch {}
  }
  return found;
}

// ---------------------------------------------------------------------------
// npm run clean

/**
 * What a killed lab leaves: its markers, its link, its keys (which the
 * kernel would drop by itself at their timeout). The signature of a step's
 * clean(): steps/08-hardening/clean.ts can pass it on.
 */
export async function cleanLab(): Promise<string[]> {
  const removed: string[] = [];
  if (existsSync(labDir())) {
    rmSync(labDir(), { recursive: true, force: true });
    removed.push(`removed ${labDir()}`);
  }
  if (await succeeds(['ip', 'link', 'show', 'dev', LAB_LINK])) {
    await run(['ip', 'link', 'del', 'dev', LAB_LINK]);
    removed.push(`deleted link ${LAB_LINK}`);
  }
  for (const line of labKeys()) {
    const id = parseInt(line, 16);
    try {
      keyctl(KEYCTL.UNLINK, id, KEY_SPEC_USER_KEYRING);
    } catch {}
    try {
      keyctl(KEYCTL.INVALIDATE, id);
      removed.push(`invalidated key ${/ (baj-lab:[^:\s]+)/.exec(line)?.[1] ?? id}`);
    } catch {}
  }
  return removed;
}
