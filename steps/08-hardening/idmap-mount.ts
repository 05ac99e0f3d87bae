// Step 08: idmapped mounts, made by host root inside the jail's mount
// namespace. The launcher runs this small program as
//   nsenter --mount=/proc/PID/ns/mnt -- node idmap-mount.mjs /proc/PID/ns/user [--read-only] PATH…
// because only root of the initial user namespace may idmap an ext4 mount,
// and Node cannot setns(2) itself into another mount namespace (it has
// threads). Step 08 idmaps its one rootfs; step 09 each layer of an image
// (read-only: every jail of the image shares them) and the jail's own dir of
// upper/ and work/. Three calls of the new mount API (Linux 5.12+) per PATH,
// each mounted in place, over itself:
//   open_tree(PATH, OPEN_TREE_CLONE|AT_RECURSIVE)   a detached copy of the mount tree
//   mount_setattr(tree, MOUNT_ATTR_IDMAP, userns)    ids through it are translated by the jail's uid_map
//   move_mount(tree -> PATH)                         attached where the init expects it
// Every tree is cloned and idmapped before the first is attached: a path the
// kernel refuses leaves none of them half done.
// Prints one line of JSON: {"ok":true} or {"path":…,"call":…,"code":…}.
// With --stdin instead of PATHs it reads them later, from one line on stdin.
import koffi from 'koffi';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mount, MS_PRIVATE, MS_REC, SyscallError } from '../../lib/libc.ts';

const libc = koffi.load('libc.so.6');
const _syscall = libc.func('long syscall(long number, ...)');

// The new mount API has the same numbers on every architecture of the
// unified syscall table (x86_64, arm64, riscv64 …): no per-arch table.
const SYS_open_tree = 428;
const SYS_move_mount = 429;
const SYS_mount_setattr = 442;

const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const AT_RECURSIVE = 0x8000;
const OPEN_TREE_CLONE = 1;
const OPEN_TREE_CLOEXEC = 0o2000000;
const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
const MOUNT_ATTR_RDONLY = 0x00000001;
const MOUNT_ATTR_IDMAP = 0x00100000;

function call(what: string, ret: number | bigint): number {
  if (Number(ret) < 0) throw new SyscallError(what, koffi.errno());
  return Number(ret);
}

function openTree(path: string): number {
  return call('open_tree', _syscall(SYS_open_tree, 'int', AT_FDCWD, 'const char *', path, 'unsigned int', OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
}

/**
 * struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd }: an
 * idmap is set once, on a detached mount. Read-only in the same call: the
 * mount never exists writable, not even for an instant.
 */
function idmapTree(tree: number, usernsFd: number, readOnly: boolean): void {
  const attr = Buffer.alloc(32);
  attr.writeBigUInt64LE(BigInt(MOUNT_ATTR_IDMAP | (readOnly ? MOUNT_ATTR_RDONLY : 0)), 0);
  attr.writeBigUInt64LE(BigInt(usernsFd), 24);
  call('mount_setattr', _syscall(SYS_mount_setattr, 'int', tree, 'const char *', '', 'unsigned int', AT_EMPTY_PATH | AT_RECURSIVE, 'void *', attr, 'size_t', attr.length));
}

function moveMount(tree: number, target: string): void {
  call('move_mount', _syscall(SYS_move_mount, 'int', tree, 'const char *', '', 'int', AT_FDCWD, 'const char *', target, 'unsigned int', MOVE_MOUNT_F_EMPTY_PATH));
}

/** argv: USERNS, then PATHs, each one after --read-only mounted read-only. */
function parseArgv(argv: string[]): { userns?: string; paths: { path: string; readOnly: boolean }[] } {
  const [userns, ...rest] = argv;
  const paths: { path: string; readOnly: boolean }[] = [];
  for (let i = 0; i < rest.length; i++) {
    const readOnly = rest[i] === '--read-only';
    const path = readOnly ? rest[++i] : rest[i];
    if (path) paths.push({ path, readOnly });
  }
  return { userns, paths };
}

/**
 * `USERNS --stdin`: started ahead of time (step 10's pool), the helper waits
 * in the jail's mount namespace for its PATHs, one line of JSON (the same
 * words as argv) on stdin; stdin closed without a line: nothing to do.
 */
function readArgv(): string[] {
  const argv = process.argv.slice(2);
  if (argv[1] !== '--stdin' || argv.length !== 2) return argv;
  const line = readFileSync(0, 'utf8').trim();
  if (!line) process.exit(0);
  return [argv[0]!, ...(JSON.parse(line) as string[])];
}

const { userns, paths } = parseArgv(readArgv());
if (!userns || !paths.length) {
  process.stderr.write('usage: nsenter --mount=/proc/PID/ns/mnt -- node idmap-mount.mjs /proc/PID/ns/user [--read-only] PATH… | --stdin\n');
  process.exit(2);
}
let at = paths[0]!.path;
try {
  // unshare already made the jail's mounts private; said again here, so
  // that not even these mounts could propagate back to the host
  mount(null, '/', null, MS_REC | MS_PRIVATE);
  const ns = openSync(userns, 'r');
  const trees: [number, string][] = [];
  for (const { path, readOnly } of paths) {
    at = path;
    const tree = openTree(path);
    trees.push([tree, path]);
    idmapTree(tree, ns, readOnly);
  }
  closeSync(ns);
  for (const [tree, path] of trees) {
    at = path;
    moveMount(tree, path);
    closeSync(tree);
  }
  writeSync(1, JSON.stringify({ ok: true }) + '\n'); // not process.stdout: making that stream costs ms
} catch (err) {
  const e = err as SyscallError;
  writeSync(1, JSON.stringify({ path: at, call: e.call ?? 'idmap', code: e.code ?? String(err) }) + '\n');
  process.exit(1);
}
