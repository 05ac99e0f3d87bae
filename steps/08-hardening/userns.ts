// Step 08, lock 0, made at clone() time: the user namespace. Root in the
// jail is root only over what its namespace owns; to the host's kernel it is
// an unprivileged uid from a range nobody else uses (step 03's idrange.ts).
// What follows is whose files: the rootfs is owned by host root, which has no name in the
//    jail. An idmapped mount (Linux 5.12+) shows it through the jail's uid_map
//    without touching the disk; where the kernel or the filesystem cannot, a
//    copy chowned into the range (cached, rebuilt when the source changes).
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, lchownSync, lstatSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { nodeArgs, nodeChildEnv } from '../../lib/bundle.mjs';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, showCommand, warn } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { requireTools } from '../../lib/preflight.ts';
import { listPids } from '../../lib/proc.ts';
import type { JailHook } from '../../lib/spec.ts';
import { ensureDir, guardFromHostUsers, isAlive, jailHome, removeStaleStaging } from '../../lib/state.ts';
import type { IdRange, IdRanges } from '../03-namespaces/idrange.ts';

const run = promisify(execFile);

// ---------------------------------------------------------------------------
// The rootfs, as the mapped root sees it

/** JAIL_NO_IDMAP=1: behave as a kernel without idmapped mounts would (the tests take the fallback this way). */
export const idmapForbidden = (): boolean => process.env.JAIL_NO_IDMAP === '1';

/** Errors that mean "this kernel or this filesystem cannot idmap", not "something broke". */
const UNSUPPORTED = ['EINVAL', 'ENOSYS', 'EPERM', 'EOPNOTSUPP', 'ENOTSUP'];

/**
 * A JailHook that makes the rootfs usable by the mapped root. attach() runs
 * after the launcher wrote the ID maps and before "go": the jail's user
 * namespace has its mapping, and its mount namespace is still a private
 * copy of the host's. Whatever is mounted there dies with the namespace.
 */
export function userNamespaceRootfs(ranges: IdRanges): JailHook {
  let copy: string | undefined;
  return {
    name: 'userns-rootfs',
    async prepare(spec) {
      // what the jail writes through the idmapped mount is root's on disk: keep host users out of it
      if (dirname(spec.rootfs).startsWith(jailHome() + '/')) guardFromHostUsers(dirname(spec.rootfs), ranges.gid.base);
      // a forced fallback is known in advance: build the copy before the jail exists
      if (idmapForbidden()) copy = await shiftedCopy(spec.rootfs, ranges);
    },
    async attach(spec, initPid) {
      requireTools('nsenter');
      heading('The rootfs, for a root that is not root');
      if (!idmapForbidden()) {
        const why = await idmapInPlace(initPid, [{ path: spec.rootfs }]);
        if (!why) {
          explain(`idmapped mount: uid 0 on disk is uid 0 in the jail (host uid ${ranges.uid.base}); nothing on disk changed`);
          return;
        }
        warn(`no idmapped mount here (${why}): using a copy of the rootfs chowned into the jail's range instead`);
      } else {
        explain('idmapped mounts: not used (JAIL_NO_IDMAP=1, as on a kernel older than 5.12 or a filesystem without them)');
      }
      copy ??= await shiftedCopy(spec.rootfs, ranges);
      await bindInJail(initPid, copy, spec.rootfs);
      explain(`chowned copy: ${copy} (its files belong to ${ranges.uid.base}+uid on the host, which is uid in the jail)`);
    },
  };
}

/** mount --bind SOURCE TARGET in the jail's mount namespace (read-only: util-linux remounts the bind ro for us). */
export async function bindInJail(initPid: number, source: string, target: string, readOnly = false): Promise<void> {
  const args = ['mount', '--bind', ...(readOnly ? ['-o', 'ro'] : []), source, target];
  showCommand(`nsenter --mount=/proc/${initPid}/ns/mnt -- ${args.join(' ')}`);
  await run('nsenter', [`--mount=/proc/${initPid}/ns/mnt`, '--', ...args]);
}

/** A directory to idmap over itself; readOnly: the idmapped mount is read-only too (a shared image layer). */
export interface IdmapTarget {
  path: string;
  readOnly?: boolean;
}

const helperEntry = repoPath('steps/08-hardening/idmap-mount.ts');
/** nsenter into the jail's mount namespace, then the helper, told the jail's user namespace. */
const helperArgv = (initPid: number, helper: string[]) => [`--mount=/proc/${initPid}/ns/mnt`, '--', process.execPath, ...helper, `/proc/${initPid}/ns/user`];

/** Helpers started ahead of time, each already in its jail's mount namespace: the init's PID -> "do these". */
const warmHelpers = new Map<number, (args: string[]) => Promise<string>>();

/**
 * Step 10's pool: the helper's Node start paid before the jail is asked
 * for. It waits in the mount namespace of `initPid` (whose ID maps are
 * written) until idmapInPlace hands it its paths; it dies with this process.
 */
export async function warmIdmapHelper(initPid: number): Promise<void> {
  const child = spawn('nsenter', [...helperArgv(initPid, await nodeArgs(helperEntry)), '--stdin'], { stdio: ['pipe', 'pipe', 'inherit'], env: nodeChildEnv() });
  let stdout = '';
  child.stdin.on('error', () => {}); // a helper that died: its (empty) answer says so
  // its answer is one line: taken as soon as it is written, not when the process has ended (Node's exit takes ms)
  const done = new Promise<string>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (stdout.includes('\n')) resolve(stdout);
    });
    child.once('error', reject);
    child.once('close', (code) => (stdout || code === 0 ? resolve(stdout) : reject(new Error(`the waiting idmap helper exited with status ${code}`))));
  });
  done.catch(() => {}); // asked or not, its end is read by whoever asks
  warmHelpers.set(initPid, (args) => {
    child.stdin.end(JSON.stringify(args) + '\n');
    return done;
  });
}

/**
 * Idmaps each path in place, in the jail's mount namespace, through the
 * jail's user namespace: all of them, or none. Returns undefined when they
 * are in place, or why this kernel or filesystem cannot (then nothing was
 * mounted); any other failure throws.
 */
export async function idmapInPlace(initPid: number, targets: IdmapTarget[]): Promise<string | undefined> {
  const userns = `/proc/${initPid}/ns/user`;
  for (const t of targets) {
    showCommand(`nsenter --mount=/proc/${initPid}/ns/mnt -- mount --bind -o X-mount.idmap=${userns}${t.readOnly ? ',ro' : ''} ${t.path} ${t.path}   # util-linux 2.39+`);
  }
  explain('(this util-linux is older: a small helper makes the same open_tree + mount_setattr + move_mount calls)');
  const args = targets.flatMap((t) => (t.readOnly ? ['--read-only', t.path] : [t.path]));
  const ahead = warmHelpers.get(initPid);
  warmHelpers.delete(initPid);
  let out = '';
  try {
    out = ahead ? await ahead(args) : (await run('nsenter', [...helperArgv(initPid, await nodeArgs(helperEntry)), ...args], { env: nodeChildEnv() })).stdout;
  } catch (err) {
    out = String((err as { stdout?: string }).stdout ?? '');
    if (!out) throw new JailError(`the idmapped mount helper failed: ${(err as Error).message.split('\n')[0]}`, 'run npm run doctor');
  }
  const result = JSON.parse(out.trim().split('\n').pop() || '{}') as { ok?: boolean; path?: string; call?: string; code?: string };
  if (result.ok) return undefined;
  if (UNSUPPORTED.includes(result.code ?? '')) return `${result.call}: ${result.code}`;
  throw new JailError(`the idmapped mount of ${result.path} failed: ${result.call}: ${result.code}`, 'JAIL_NO_IDMAP=1 uses a chowned copy instead');
}

// ---------------------------------------------------------------------------
// The fallback: a copy whose owners are shifted into the range

/** Where the chowned copies live (step 09 puts its layers' copies here too). */
export const shiftedDir = (): string => join(jailHome(), 'rootfs-shifted');

/**
 * What the copy was made from: every entry's name, type, mode, owner, size
 * and mtime. A rebuilt or edited source gives another fingerprint.
 */
function fingerprint(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const s = lstatSync(p);
      h.update(`${p}\0${s.mode}\0${s.uid}\0${s.gid}\0${s.size}\0${s.mtimeMs}\n`);
      if (s.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return h.digest('hex').slice(0, 16);
}

/**
 * chown(2) of every entry: uid u becomes base+u. chown clears the setuid and
 * setgid bits of a file (so that a changed owner cannot inherit them), so
 * they are put back. File capabilities (the security.capability xattr) are
 * dropped by chown too, and stay dropped: the jail's root holds the
 * capabilities such files would grant anyway.
 */
function shiftOwners(dir: string, ranges: IdRanges): void {
  const shift = (id: number, r: IdRange) => (id < r.count ? r.base + id : id);
  const walk = (p: string) => {
    const s = lstatSync(p);
    lchownSync(p, shift(s.uid, ranges.uid), shift(s.gid, ranges.gid));
    if (!s.isSymbolicLink() && s.mode & 0o6000) chmodSync(p, s.mode & 0o7777);
    if (s.isDirectory()) for (const name of readdirSync(p)) walk(join(p, name));
  };
  walk(dir);
}

/** A mount namespace that has `dir` mounted somewhere: some jail still runs on it. */
function mountedAnywhere(dir: string): boolean {
  const seen = new Set<string>();
  for (const pid of listPids()) {
    try {
      const ns = readlinkSync(`/proc/${pid}/ns/mnt`);
      if (seen.has(ns)) continue;
      seen.add(ns);
      if (readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(` ${dir} `)) return true;
    } catch {}
  }
  return false;
}

/** The cached shifted copy of `rootfs` for these ranges, built if missing or stale. */
export async function shiftedCopy(rootfs: string, ranges: IdRanges): Promise<string> {
  const key = `${basename(rootfs)}-${createHash('sha256').update(rootfs).digest('hex').slice(0, 8)}-${ranges.uid.base}`;
  // 0700: a setuid file in a jail's copy is no business of the host's users
  const parent = ensureDir(shiftedDir(), 0o700);
  chmodSync(parent, 0o700);
  const stamp = fingerprint(rootfs);
  const dir = join(parent, `${key}-${stamp}`);
  if (existsSync(dir) && existsSync(`${dir}.done`)) {
    explain(`chowned copy of ${rootfs}: cached (the source has not changed since)`);
    return dir;
  }
  heading(`Copying ${rootfs} and shifting its owners into ${ranges.uid.base}-${ranges.uid.base + ranges.uid.count - 1}`);
  showCommand(`cp -a ${rootfs} ${dir}`);
  showCommand(`# then every file: chown -h $((${ranges.uid.base}+uid)):$((${ranges.gid.base}+gid)) FILE, and its setuid bits put back`);
  const tmp = `${dir}.building-${process.pid}`;
  try {
    await run('cp', ['-a', '--reflink=auto', rootfs, tmp]);
    shiftOwners(tmp, ranges);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    writeFileSync(`${dir}.done`, `${rootfs}\n`);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw new JailError(`could not make the chowned copy of ${rootfs}: ${(err as Error).message.split('\n')[0]}`, `is there room in ${parent}? (du -sh ${rootfs})`);
  }
  removeStaleCopies(parent, key, dir);
  return dir;
}

/** Copies of older sources (and builds killed half-way) go, unless a jail still runs on them. */
function removeStaleCopies(parent: string, key: string, keep: string): void {
  for (const entry of readdirSync(parent)) {
    const p = join(parent, entry);
    if (!entry.startsWith(key + '-') || p === keep || entry.endsWith('.done')) continue;
    const building = entry.match(/\.building-(\d+)$/);
    if (building ? isAlive(Number(building[1])) : mountedAnywhere(p)) continue;
    rmSync(p, { recursive: true, force: true });
    rmSync(`${p}.done`, { force: true });
  }
}

/** npm run clean: copies whose build was killed half-way (*.building-PID of a dead PID). */
export function removeHalfBuiltCopies(): string[] {
  return removeStaleStaging(shiftedDir(), /\.building-(\d+)$/).map((p) => `removed the half-built copy ${p}`);
}
