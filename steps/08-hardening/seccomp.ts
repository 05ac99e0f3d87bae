// Step 08, lock 4, loaded last: seccomp. A BPF program the kernel runs on
// every system call of this thread (and of everything it starts, forever):
// it looks at the call's number and its six arguments, and says ALLOW or
// "fail with this errno". Ours is a deny list in the spirit of Docker's
// default profile: the calls below reach the parts of the kernel that are
// NOT namespaced, or that rearrange the prison the other locks were built on.
// libseccomp (Debian's libseccomp2) writes the BPF for us, through koffi.
import koffi from 'koffi';
import { release } from 'node:os';
import { JailError } from '../../lib/errors.ts';
import { SyscallError } from '../../lib/libc.ts';

export interface DenyRule {
  calls: string[];
  /** The kernel's reason, shown to the learner. */
  why: string;
  /** Keeping one of these capabilities lifts the rule, as in Docker's profile: --cap-add SYS_ADMIN makes mount work again. */
  unless?: string[];
  /** ENOSYS instead of EPERM: "no such call here", so that a library falls back to an older call. */
  errno?: 'ENOSYS';
}

export const DENY_LIST: DenyRule[] = [
  { calls: ['keyctl', 'add_key', 'request_key'], why: 'the kernel keyrings are not namespaced: keys of the host, and of other jails, live there' },
  { calls: ['init_module', 'finit_module', 'delete_module'], why: 'a module is code in the one kernel every jail and the host share', unless: ['CAP_SYS_MODULE'] },
  { calls: ['kexec_load', 'kexec_file_load', 'reboot'], why: 'replace or restart the shared kernel (reboot in a PID namespace only ends the jail, but kexec does not)', unless: ['CAP_SYS_BOOT'] },
  {
    calls: ['mount', 'umount2', 'umount', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'open_tree', 'move_mount', 'mount_setattr'],
    why: 'rearrange the mounts the prison is made of (umount /proc/kcore unmasks it); the new mount API (Linux 5.2) is the same power under other names',
    unless: ['CAP_SYS_ADMIN'],
  },
  { calls: ['setns'], why: "join another namespace, e.g. through a /proc/PID/ns file that leaked in", unless: ['CAP_SYS_ADMIN'] },
  { calls: ['clone3'], why: 'its flags are in a struct seccomp cannot read; ENOSYS makes glibc fall back to clone(), whose flags it can', errno: 'ENOSYS', unless: ['CAP_SYS_ADMIN'] },
  { calls: ['settimeofday', 'clock_settime', 'clock_adjtime', 'stime'], why: 'the wall clock is one for the whole machine (time namespaces offset only the monotonic clocks)', unless: ['CAP_SYS_TIME'] },
  { calls: ['iopl', 'ioperm'], why: "raw I/O ports: the host's hardware, directly", unless: ['CAP_SYS_RAWIO'] },
  { calls: ['swapon', 'swapoff'], why: "the host's swap", unless: ['CAP_SYS_ADMIN'] },
  { calls: ['acct'], why: 'process accounting writes every exit on the machine to a file', unless: ['CAP_SYS_PACCT'] },
  { calls: ['open_by_handle_at'], why: 'opens any inode of a filesystem by number, past every mount: the 2014 "shocker" escape from Docker', unless: ['CAP_DAC_READ_SEARCH'] },
  { calls: ['name_to_handle_at', 'quotactl', 'quotactl_fd', 'fanotify_init', 'lookup_dcookie'], why: 'filesystem internals beyond what a mount namespace hides', unless: ['CAP_SYS_ADMIN'] },
  { calls: ['bpf'], why: 'programs that run inside the kernel: a large attack surface', unless: ['CAP_SYS_ADMIN', 'CAP_BPF'] },
  { calls: ['perf_event_open'], why: 'observe the whole machine, and a long list of kernel bugs', unless: ['CAP_SYS_ADMIN', 'CAP_PERFMON'] },
  { calls: ['userfaultfd'], why: 'pauses the kernel mid-copy: the classic tool for winning an exploit race (Docker allows it to no one)' },
  { calls: ['process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise'], why: "another process's memory and files", unless: ['CAP_SYS_PTRACE'] },
  { calls: ['get_mempolicy', 'set_mempolicy', 'set_mempolicy_home_node', 'mbind'], why: "the machine's NUMA memory placement, which the jail's cgroup does not confine", unless: ['CAP_SYS_NICE'] },
  { calls: ['migrate_pages', 'move_pages'], why: "move another process's memory between NUMA nodes (Docker allows it to no one)" },
  { calls: ['vhangup'], why: 'hang up the terminal, which may be the host\'s', unless: ['CAP_SYS_TTY_CONFIG'] },
  { calls: ['io_uring_setup', 'io_uring_enter', 'io_uring_register'], why: 'its operations run in the kernel without passing this filter, and it has been a rich source of escapes (Docker blocks it since 25.0)', errno: 'ENOSYS' },
  { calls: ['syslog'], why: "the host kernel's log, with its addresses", unless: ['CAP_SYSLOG'] },
  { calls: ['vm86', 'vm86old', 'uselib', 'ustat', 'sysfs', '_sysctl', 'nfsservctl', 'create_module', 'get_kernel_syms', 'query_module'], why: 'obsolete calls nobody needs, kept by some kernels for old binaries' },
];

/** The namespace flags of clone(2) and unshare(2). CLONE_NEWTIME's bit is CSIGNAL's in clone(): unshare only. */
export const NAMESPACE_FLAGS: Record<string, number> = {
  CLONE_NEWNS: 0x00020000,
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
};
const CLONE_NEWTIME = 0x00000080;

/** clone's flags are its first argument everywhere but s390, where the stack comes first. */
const cloneFlagsArg = process.arch === 's390x' ? 1 : 0;

/**
 * Before Linux 4.8, a tracer could change a system call after seccomp had
 * allowed it, so ptrace was a way around any filter. Since 4.8 the filter
 * looks again after the tracer, and ptrace is safe to allow (the kernel
 * still checks CAP_SYS_PTRACE and the Yama settings).
 */
export function ptraceBypassesSeccomp(kernel = release()): boolean {
  const [major = 0, minor = 0] = kernel.split(/[.-]/).map(Number);
  return major < 4 || (major === 4 && minor < 8);
}

// libseccomp's ABI (seccomp.h)
const SCMP_ACT_ALLOW = 0x7fff0000;
const SCMP_ACT_ERRNO = (errno: number): number => 0x00050000 | (errno & 0xffff);
const SCMP_CMP_EQ = 4;
const SCMP_CMP_MASKED_EQ = 7;
const AF_VSOCK = 40;
const SCMP_FLTATR_CTL_NNP = 3;
const SCMP_FLTATR_CTL_TSYNC = 4;
const EPERM = 1;
const ENOSYS = 38;

/** The library's name; JAIL_LIBSECCOMP points it elsewhere (the tests use it to pretend it is missing). */
export const libseccompName = (): string => process.env.JAIL_LIBSECCOMP || 'libseccomp.so.2';

export const missingLibseccomp = (name: string): JailError =>
  new JailError(`seccomp needs libseccomp, and ${name} cannot be loaded: install libseccomp2 (sudo apt-get install libseccomp2)`, '--security-opt seccomp=unconfined runs the jail without the filter');

interface Libseccomp {
  init: (defaultAction: number) => unknown;
  resolve: (name: string) => number;
  ruleAdd: (ctx: unknown, action: number, syscall: number, argCount: number, args: Buffer | null) => number;
  attrSet: (ctx: unknown, attr: number, value: number) => number;
  load: (ctx: unknown) => number;
  release: (ctx: unknown) => void;
}

let lib: Libseccomp | undefined;

/** dlopen()s libseccomp. In the init this must happen before pivot_root: afterwards the host's /lib is gone. */
export function openLibseccomp(): Libseccomp {
  if (lib) return lib;
  const name = libseccompName();
  let so: ReturnType<typeof koffi.load>;
  try {
    so = koffi.load(name);
  } catch {
    throw missingLibseccomp(name);
  }
  return (lib = {
    init: so.func('void *seccomp_init(uint32_t def_action)'),
    resolve: so.func('int seccomp_syscall_resolve_name(const char *name)'),
    ruleAdd: so.func('int seccomp_rule_add_array(void *ctx, uint32_t action, int syscall, unsigned int arg_cnt, const void *arg_array)'),
    attrSet: so.func('int seccomp_attr_set(void *ctx, int attr, uint32_t value)'),
    load: so.func('int seccomp_load(void *ctx)'),
    release: so.func('void seccomp_release(void *ctx)'),
  });
}

/** struct scmp_arg_cmp { unsigned arg; enum op; u64 datum_a; u64 datum_b; }: "arg == value". */
function argEq(arg: number, value: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(arg, 0);
  b.writeInt32LE(SCMP_CMP_EQ, 4);
  b.writeBigUInt64LE(BigInt(value), 8);
  return b;
}

/** struct scmp_arg_cmp { unsigned arg; enum op; u64 datum_a; u64 datum_b; }: "arg & mask == value". */
function maskedEq(arg: number, mask: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(arg, 0);
  b.writeInt32LE(SCMP_CMP_MASKED_EQ, 4);
  b.writeBigUInt64LE(BigInt(mask), 8);
  b.writeBigUInt64LE(BigInt(mask), 16);
  return b;
}

export interface Filter {
  /** Rules in the filter, one per call (one per flag for clone and unshare). */
  rules: string[];
  /** Calls this architecture (or this libseccomp) does not have. */
  skipped: string[];
  /** Rules lifted because the jail keeps the capability they guard. */
  lifted: string[];
  /** seccomp_load: from here on, for this process and every child. */
  load(): void;
}

/**
 * Builds the filter (nothing is in force yet). Default action ALLOW, each
 * rule ERRNO. `keep` is the jail's capability list: a rule guarding a
 * capability the jail keeps is left out.
 */
export function buildFilter(keep: readonly string[]): Filter {
  const s = openLibseccomp();
  const ctx = s.init(SCMP_ACT_ALLOW);
  if (!ctx) throw new Error('seccomp_init failed');
  const rules: string[] = [];
  const skipped: string[] = [];
  const lifted: string[] = [];
  const add = (call: string, errno: number, args: Buffer[] = [], label = call): void => {
    const nr = s.resolve(call);
    // negative: unknown to libseccomp, or a call this architecture lacks (vm86 on x86_64)
    if (nr < 0) return void skipped.push(call);
    const rc = s.ruleAdd(ctx, SCMP_ACT_ERRNO(errno), nr, args.length, args.length ? Buffer.concat(args) : null);
    if (rc < 0) throw new SyscallError(`seccomp_rule_add ${label}`, -rc);
    rules.push(label);
  };
  try {
    const rulesOf = [...DENY_LIST];
    if (ptraceBypassesSeccomp()) rulesOf.push({ calls: ['ptrace'], why: 'before 4.8, a tracer could rewrite a call after the filter allowed it', unless: ['CAP_SYS_PTRACE'] });
    for (const rule of rulesOf) {
      if (rule.unless?.some((c) => keep.includes(c))) {
        lifted.push(...rule.calls);
        continue;
      }
      for (const call of rule.calls) add(call, rule.errno === 'ENOSYS' ? ENOSYS : EPERM);
    }
    // socket stays, but not for vsock (AF_VSOCK): a channel to the hypervisor
    // and to the host's own vsock services, outside every network namespace
    add('socket', EPERM, [argEq(0, AF_VSOCK)], 'socket(AF_VSOCK)');
    // clone and unshare stay for threads and fork; only a NEW namespace is
    // refused: one rule per flag, "(flags & FLAG) == FLAG" — libseccomp ORs
    // the rules of one call.
    if (keep.includes('CAP_SYS_ADMIN')) lifted.push('clone (namespace flags)', 'unshare (namespace flags)');
    else {
      for (const [flag, bit] of Object.entries(NAMESPACE_FLAGS)) add('clone', EPERM, [maskedEq(cloneFlagsArg, bit)], `clone(${flag})`);
      for (const [flag, bit] of Object.entries({ ...NAMESPACE_FLAGS, CLONE_NEWTIME })) add('unshare', EPERM, [maskedEq(0, bit)], `unshare(${flag})`);
    }
    // no_new_privs is the lock before this one, set by us and shown; libseccomp would otherwise set it silently
    check(s.attrSet(ctx, SCMP_FLTATR_CTL_NNP, 0), 'seccomp_attr_set NNP');
    // TSYNC: the filter goes on every thread of the init, not only on the
    // main one that spawns the target. Node's other threads (V8's and libuv's,
    // which runs fs calls for JavaScript) are filtered too.
    check(s.attrSet(ctx, SCMP_FLTATR_CTL_TSYNC, 1), 'seccomp_attr_set TSYNC');
  } catch (err) {
    s.release(ctx);
    throw err;
  }
  return {
    rules,
    skipped,
    lifted,
    load() {
      try {
        check(s.load(ctx), 'seccomp_load');
      } finally {
        s.release(ctx);
      }
    },
  };
}

function check(rc: number, call: string): void {
  if (rc < 0) throw new SyscallError(call, -rc);
}
