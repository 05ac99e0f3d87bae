// The libc calls the lesson's Go code makes through package syscall
// (syscall.Mount, syscall.PivotRoot, syscall.Sethostname …), reached from
// TypeScript through the koffi FFI. Mostly code that already runs inside the
// jail's namespaces uses these (the host side uses the ordinary tools), but
// for a few calls no tool exists: flock for the network's leases,
// renameat2 for step 01's atomic swap, the xattr calls for step 09's layers.
import koffi, { type LibraryHandle } from 'koffi';
import { closeSync, readdirSync } from 'node:fs';
import { constants } from 'node:os';

type LibcFunction = ReturnType<LibraryHandle['func']>;
let libc: LibraryHandle | undefined;
const binders: ((lib: LibraryHandle) => void)[] = [];

/**
 * A libc function, bound when libc is first needed: a program that makes
 * no call (the launcher, on the host) never dlopens libc through koffi, and
 * in a bundle (lib/bundle.mjs) never loads koffi's native addon either.
 */
function fn(declaration: string): LibcFunction {
  let f: LibcFunction | undefined;
  binders.push((lib) => void (f ??= lib.func(declaration)));
  return ((...args: unknown[]) => (f ?? (loadLibc(), f!))(...args)) as LibcFunction;
}

/**
 * Loads koffi and libc and binds every function now rather than at the first
 * call: for a caller with a moment to spare (an init waiting for its launcher).
 */
export function loadLibc(): void {
  if (libc) return;
  const lib = koffi.load('libc.so.6');
  for (const bind of binders) bind(lib);
  libc = lib;
}

// mount(2) flags, from <sys/mount.h>
export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_REMOUNT = 32;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_PRIVATE = 1 << 18;
export const MNT_DETACH = 2;

const _mount = fn('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
const _umount2 = fn('int umount2(const char *target, int flags)');
const _syscall = fn('long syscall(long number, ...)');
const _sethostname = fn('int sethostname(const char *name, size_t len)');
const _chroot = fn('int chroot(const char *path)');
const _chdir = fn('int chdir(const char *path)');
const _mknod = fn('int mknod(const char *path, uint32_t mode, uint64_t dev)');
const _execve = fn('int execve(const char *path, const char **argv, const char **envp)');
const _fcntl = fn('int fcntl(int fd, int cmd, ...)');
const _signal = fn('void *signal(int sig, void *handler)');
const _sigprocmask = fn('int sigprocmask(int how, void *set, void *old)');
const _sigemptyset = fn('int sigemptyset(void *set)');
const _sigaddset = fn('int sigaddset(void *set, int sig)');
const _waitpid = fn('int waitpid(int pid, _Out_ int *status, int options)');
const _tcsetpgrp = fn('int tcsetpgrp(int fd, int pgrp)');
const _tcgetpgrp = fn('int tcgetpgrp(int fd)');
const _isatty = fn('int isatty(int fd)');
const _getpgrp = fn('int getpgrp()');
const _renameat2 = fn('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)');
const _posix_spawn = fn('int posix_spawn(_Out_ int *pid, const char *path, void *actions, void *attr, const char **argv, const char **envp)');
const _spawnattr_init = fn('int posix_spawnattr_init(void *attr)');
const _spawnattr_setflags = fn('int posix_spawnattr_setflags(void *attr, short flags)');
const _spawnattr_setsigmask = fn('int posix_spawnattr_setsigmask(void *attr, void *set)');
const _spawnattr_setsigdefault = fn('int posix_spawnattr_setsigdefault(void *attr, void *set)');
const _spawnattr_setpgroup = fn('int posix_spawnattr_setpgroup(void *attr, int pgroup)');
const _actions_init = fn('int posix_spawn_file_actions_init(void *actions)');
const _actions_adddup2 = fn('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)');
const _actions_destroy = fn('int posix_spawn_file_actions_destroy(void *actions)');
const _pipe2 = fn('int pipe2(void *fds, int flags)');
const _socket = fn('int socket(int domain, int type, int protocol)');
const _ioctl = fn('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *arg)');

const errnoNames = Object.fromEntries(Object.entries(constants.errno).map(([k, v]) => [v, k]));

export class SyscallError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${errnoNames[errno] ?? 'errno ' + errno}`);
    this.name = 'SyscallError';
  }
  get code(): string {
    return errnoNames[this.errno] ?? String(this.errno);
  }
}

function check(ret: number | bigint, call: string): void {
  if (Number(ret) < 0) throw new SyscallError(call, koffi.errno());
}

export function mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null = null): void {
  check(_mount(source, target, fstype, flags, data), `mount ${target}`);
}

export function umount2(target: string, flags: number): void {
  check(_umount2(target, flags), `umount2 ${target}`);
}

// glibc has no pivot_root() wrapper; the syscall number is per architecture.
const SYS_pivot_root = ({ x64: 155, arm64: 41, riscv64: 41 } as Record<string, number>)[process.arch];

export function pivotRoot(newRoot: string, putOld: string): void {
  if (SYS_pivot_root === undefined) throw new Error(`pivot_root: unknown syscall number on ${process.arch}`);
  check(_syscall(SYS_pivot_root, 'const char *', newRoot, 'const char *', putOld), 'pivot_root');
}

export function sethostname(name: string): void {
  check(_sethostname(name, Buffer.byteLength(name)), 'sethostname');
}

export function chroot(path: string): void {
  check(_chroot(path), `chroot ${path}`);
}

export function chdir(path: string): void {
  check(_chdir(path), `chdir ${path}`);
}

// netdevice(7): an interface's flags through ioctl on any socket; struct
// ifreq is the name (IFNAMSIZ = 16 bytes) and a union whose first member
// is the short ifr_flags, 40 bytes in all
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 1;

/** `ip link set NAME up`, in our network namespace (a jail's PID 1 brings its lo up so). */
export function linkUp(name: string): void {
  const fd = _socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */ | 0o2000000 /* SOCK_CLOEXEC */, 0) as number;
  check(fd, 'socket');
  try {
    const ifr = Buffer.alloc(40);
    ifr.write(name, 0, 15, 'utf8');
    check(_ioctl(fd, SIOCGIFFLAGS, ifr), `SIOCGIFFLAGS ${name}`);
    ifr.writeInt16LE(ifr.readInt16LE(16) | IFF_UP, 16);
    check(_ioctl(fd, SIOCSIFFLAGS, ifr), `SIOCSIFFLAGS ${name}`);
  } finally {
    closeSync(fd);
  }
}

export const S_IFCHR = 0o020000;
export const makedev = (major: number, minor: number): bigint => (BigInt(major) << 8n) | BigInt(minor);

export function mknod(path: string, mode: number, dev: bigint): void {
  check(_mknod(path, mode, dev), `mknod ${path}`);
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** A descriptor a spawned target must not inherit (the init's channel to its launcher). */
export function setCloexec(fd: number): void {
  const flags = _fcntl(fd, F_GETFD);
  if (flags >= 0) _fcntl(fd, F_SETFD, 'int', flags | FD_CLOEXEC);
}

// close_range(2) has one number on every architecture of the unified table
const SYS_close_range = 436;
const CLOSE_RANGE_CLOEXEC = 1 << 2;

/**
 * Marks every descriptor from `first` up close-on-exec (close_range, Linux
 * 5.11+; else one by one from /proc/self/fd). They stay open for us and never
 * reach a program we start: a descriptor inherited from outside the jail (a
 * directory of the host, say) would be a door out of it (runc's CVE-2024-21626).
 */
export function cloexecFrom(first: number): void {
  if (Number(_syscall(SYS_close_range, 'unsigned int', first, 'unsigned int', 0xffffffff, 'unsigned int', CLOSE_RANGE_CLOEXEC)) === 0) return;
  for (const name of readdirSync('/proc/self/fd')) if (Number(name) >= first) setCloexec(Number(name));
}

/** fds 0-2 must survive execve; Node may have marked them close-on-exec. */
export function clearCloexec(fd: number): void {
  const flags = _fcntl(fd, F_GETFD);
  if (flags >= 0) _fcntl(fd, F_SETFD, 'int', flags & ~FD_CLOEXEC);
}

export const SIGPIPE = constants.signals.SIGPIPE;
export const SIGXFSZ = constants.signals.SIGXFSZ;
export const SIGTTOU = constants.signals.SIGTTOU;
export const SIGTTIN = constants.signals.SIGTTIN;

/** Node ignores SIGPIPE; ignored signals stay ignored across exec, so put them back. */
export function resetToDefault(sig: number): void {
  _signal(sig, null);
}

const SIG_BLOCK = 0;
const SIG_SETMASK = 2;
const sigset = (signals: number[]): Buffer => {
  const set = Buffer.alloc(128);
  _sigemptyset(set);
  for (const s of signals) _sigaddset(set, s);
  return set;
};

/** Blocks signals in the calling (main) thread. */
export function blockSignals(signals: number[]): void {
  check(_sigprocmask(SIG_BLOCK, sigset(signals), null), 'sigprocmask');
}

export function unblockAllSignals(): void {
  check(_sigprocmask(SIG_SETMASK, sigset([]), null), 'sigprocmask');
}

const _exitNow = fn('void _exit(int status)');

/**
 * _exit(2): the process ends now, as the kernel ends it: no exit listeners,
 * no flush of buffered output, no teardown of Node's threads and heap (which
 * process.exit() spends ~1.5 ms on). Only for a process with nothing left to
 * write or undo: a jail's PID 1 once its target is gone.
 */
export function _exit(status: number): never {
  _exitNow(status);
  throw new Error('unreachable');
}

export function execve(path: string, argv: string[], env: string[]): never {
  check(_execve(path, [...argv, null], [...env, null]), `execve ${path}`);
  throw new Error('unreachable');
}

export const WNOHANG = 1;

/** waitpid(2): returns [pid, raw status]; pid 0 means nothing has exited yet. */
export function waitpid(pid: number, options: number): [number, number] {
  const status = [0];
  const ret = _waitpid(pid, status, options);
  if (ret < 0) throw new SyscallError('waitpid', koffi.errno());
  return [ret, status[0]!];
}

/** Decodes a raw wait status into the shell's convention: exit code, or 128+signal. */
export function shellStatus(raw: number): number {
  const sig = raw & 0x7f;
  return sig === 0 ? (raw >> 8) & 0xff : 128 + sig;
}

/**
 * isatty(3), as node:tty's: libc's own, so that an init need not load
 * node:tty (and node:net under it, ~3 ms of an init's start) to ask.
 */
export const isatty = (fd: number): boolean => _isatty(fd) === 1;
export const tcsetpgrp = (fd: number, pgrp: number): number => _tcsetpgrp(fd, pgrp);
export const tcgetpgrp = (fd: number): number => _tcgetpgrp(fd);
export const getpgrp = (): number => _getpgrp();

const RENAME_EXCHANGE = 2;
const AT_FDCWD = -100;

/** Swaps two paths in one step: nobody ever sees neither or half of them. */
export function exchangePaths(a: string, b: string): void {
  check(_renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE), `renameat2 ${a} <-> ${b}`);
}

const POSIX_SPAWN_SETPGROUP = 0x02;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;

const O_CLOEXEC = 0o2000000;

/** pipe2(O_CLOEXEC): [read end, write end]; neither leaks into a spawned child unless handed to it. */
export function pipe(): [number, number] {
  const fds = Buffer.alloc(8);
  check(_pipe2(fds, O_CLOEXEC), 'pipe2');
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

export interface SpawnOptions {
  /** Its own process group, which can own the terminal. */
  newGroup?: boolean;
  /** Its own session, no terminal (a detached jail). */
  newSession?: boolean;
  /** The child's fds 0, 1 and 2 (dup2 clears close-on-exec on the copies); by default ours. */
  stdio?: [number, number, number];
}

/**
 * posix_spawn(3): fork+exec done by libc, safe in a multi-threaded process
 * like Node. The child gets an empty signal mask and default handlers, and
 * either its own process group (to own the terminal) or its own session.
 */
export function spawn(path: string, argv: string[], env: string[], opts: SpawnOptions = {}): number {
  const attr = Buffer.alloc(512);
  _spawnattr_init(attr);
  let flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (opts.newGroup) flags |= POSIX_SPAWN_SETPGROUP;
  if (opts.newSession) flags |= POSIX_SPAWN_SETSID;
  _spawnattr_setflags(attr, flags);
  _spawnattr_setsigmask(attr, sigset([]));
  _spawnattr_setsigdefault(attr, sigset([SIGPIPE, SIGXFSZ, SIGTTOU, SIGTTIN, constants.signals.SIGINT, constants.signals.SIGTERM, constants.signals.SIGHUP, constants.signals.SIGQUIT]));
  if (opts.newGroup) _spawnattr_setpgroup(attr, 0);
  let actions: Buffer | null = null;
  if (opts.stdio) {
    actions = Buffer.alloc(256);
    _actions_init(actions);
    opts.stdio.forEach((fd, target) => _actions_adddup2(actions, fd, target));
  }
  const pid = [0];
  try {
    const err = _posix_spawn(pid, path, actions, attr, [...argv, null], [...env, null]);
    if (err !== 0) throw new SyscallError(`posix_spawn ${path}`, err);
  } finally {
    if (actions) _actions_destroy(actions);
  }
  return pid[0]!;
}

// flock(2), for the one lock the host side needs (step 05's network leases):
// the kernel drops the lock when the last descriptor of its open file closes,
// so a killed holder can never leave it locked. Node has no flock.
const _flock = fn('int flock(int fd, int op)');
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/**
 * flock(2) on fd: true once the lock is held (or released, for LOCK_UN).
 * false if another open file holds it and op has LOCK_NB (EWOULDBLOCK), or a
 * signal interrupted the wait (EINTR): try again. Any other error throws.
 */
export function flock(fd: number, op: number): boolean {
  if (_flock(fd, op) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EWOULDBLOCK || errno === constants.errno.EINTR) return false;
  throw new SyscallError(`flock fd ${fd}`, errno);
}

// Extended attributes, for step 09's layers: overlayfs marks an opaque
// directory with trusted.overlay.opaque=y (only root may read or write the
// trusted.* namespace), and a file capability (Debian's ping: cap_net_raw)
// lives in security.capability. Node has no xattr calls. The l- variants act
// on a symlink itself, never on what it points to: a layer is walked and
// written without following its links.
const _lgetxattr = fn('long lgetxattr(const char *path, const char *name, void *value, size_t size)');
const _lsetxattr = fn('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)');
const _llistxattr = fn('long llistxattr(const char *path, void *list, size_t size)');
const _lremovexattr = fn('int lremovexattr(const char *path, const char *name)');

/** "No such attribute", and "this filesystem keeps none": both mean there is nothing to read. */
const noXattr = (errno: number): boolean => errno === constants.errno.ENODATA || errno === constants.errno.ENOTSUP;

/** The names of a path's extended attributes (getfattr -d -m - PATH), sorted. */
export function listXattrs(path: string): string[] {
  for (;;) {
    const size = Number(_llistxattr(path, null, 0));
    if (size < 0) {
      if (noXattr(koffi.errno())) return [];
      throw new SyscallError(`llistxattr ${path}`, koffi.errno());
    }
    if (size === 0) return [];
    const buf = Buffer.alloc(size);
    const got = Number(_llistxattr(path, buf, size));
    if (got < 0 && koffi.errno() === constants.errno.ERANGE) continue; // it grew in between: ask again
    if (got < 0) throw new SyscallError(`llistxattr ${path}`, koffi.errno());
    return buf.subarray(0, got).toString('utf8').split('\0').filter(Boolean).sort();
  }
}

/** One attribute's value (getfattr -n NAME PATH), or undefined if the path has none of that name. */
export function getXattr(path: string, name: string): Buffer | undefined {
  for (;;) {
    const size = Number(_lgetxattr(path, name, null, 0));
    if (size < 0) {
      if (noXattr(koffi.errno())) return undefined;
      throw new SyscallError(`lgetxattr ${path} ${name}`, koffi.errno());
    }
    const buf = Buffer.alloc(size);
    const got = size === 0 ? 0 : Number(_lgetxattr(path, name, buf, size));
    if (got < 0 && koffi.errno() === constants.errno.ERANGE) continue;
    if (got < 0) throw new SyscallError(`lgetxattr ${path} ${name}`, koffi.errno());
    return buf.subarray(0, got);
  }
}

/** setfattr -n NAME -v VALUE PATH */
export function setXattr(path: string, name: string, value: Buffer | string): void {
  const buf = Buffer.from(value);
  check(_lsetxattr(path, name, buf, buf.length, 0), `lsetxattr ${path} ${name}`);
}

/** setfattr -x NAME PATH */
export function removeXattr(path: string, name: string): void {
  check(_lremovexattr(path, name), `lremovexattr ${path} ${name}`);
}
