// Step 08, lock 2: capabilities. Since Linux 2.2 "root" is not one power but
// about forty (capabilities(7)); a process holds five sets of them, and a
// jail keeps only the few a normal program needs — Docker's default 14.
//   bounding     the most this thread, and every program it execs, can ever hold
//   permitted    what it may switch on          effective  what is switched on
//   inheritable  what may pass through execve   ambient    what passes to non-root programs
// Each set belongs to one THREAD. The init applies them in its main thread,
// which posix_spawns the target; the target inherits them from that thread.
import koffi from 'koffi';
import { readFileSync } from 'node:fs';
import { JailError } from '../../lib/errors.ts';
import { SyscallError } from '../../lib/libc.ts';
import { showCommand } from '../../lib/output.ts';

const libc = koffi.load('libc.so.6');
const _prctl = libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)');
const _capset = libc.func('int capset(void *header, void *data)');

/** The kernel's numbering (linux/capability.h): bit N of every set in /proc/PID/status. */
export const CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/**
 * Docker's default set (moby's caps.DefaultCapabilities): enough to run a
 * package manager, a web server on port 80 and ping. Left out, among the
 * rest: SYS_ADMIN (mount, and half the kernel), NET_ADMIN (the network's
 * configuration), SYS_PTRACE, SYS_MODULE, SYS_RAWIO, SYS_TIME, DAC_READ_SEARCH
 * (open_by_handle_at: the 2014 "shocker" escape) and BPF.
 */
export const DOCKER_DEFAULT_CAPS: readonly string[] = Object.freeze([
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW', 'CAP_SYS_CHROOT', 'CAP_MKNOD', 'CAP_AUDIT_WRITE', 'CAP_SETFCAP',
]);

/** This kernel's highest capability number (a newer kernel may know more names than we do). */
const lastCap = (): number => Math.min(Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8')), CAPABILITIES.length - 1);

/** 'net_admin', 'NET_ADMIN' and 'CAP_NET_ADMIN' all name CAP_NET_ADMIN, as in docker run --cap-add. */
export function capabilityName(text: string): string {
  const upper = text.trim().toUpperCase();
  const name = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!(CAPABILITIES as readonly string[]).includes(name)) {
    throw new JailError(`'${text}' is not a capability name (capabilities(7) lists them, e.g. NET_ADMIN or CAP_SYS_TIME)`, undefined, 2);
  }
  return name;
}

/** The names of the bits set in a mask like /proc/PID/status's CapEff (hex). */
export function capabilitiesIn(hex: string): string[] {
  const mask = BigInt('0x' + hex);
  return CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
}

/** The mask of a list of names: what /proc/PID/status would show for them. */
export function capabilityMask(names: readonly string[]): bigint {
  return names.reduce((m, n) => m | (1n << BigInt(CAPABILITIES.indexOf(n as (typeof CAPABILITIES)[number]))), 0n);
}

/** One line of /proc/self/status, e.g. capabilitySet('CapBnd'): the calling thread's bounding set. */
export function capabilitySet(field: 'CapInh' | 'CapPrm' | 'CapEff' | 'CapBnd' | 'CapAmb', status = readFileSync('/proc/thread-self/status', 'utf8')): string[] {
  const hex = status.match(new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm'))?.[1];
  if (hex === undefined) throw new Error(`no ${field} line in /proc/thread-self/status`);
  return capabilitiesIn(hex);
}

/** Every capability this process's root holds: what --privileged keeps (read on the host, by the launcher). */
export const hostCapabilities = (): string[] => capabilitySet('CapBnd', readFileSync('/proc/self/status', 'utf8'));

const PR_CAPBSET_DROP = 24;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;
const _LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** prctl(2) with one argument; the locks' other prctls (no_new_privs, dumpable) use it too. */
export function prctl(option: number, arg2 = 0, what = `prctl ${option}`): void {
  if (_prctl(option, arg2, 0, 0, 0) < 0) throw new SyscallError(what, koffi.errno());
}

/**
 * PR_CAPBSET_DROP, one capability at a time. It needs CAP_SETPCAP in the
 * effective set, so it comes first, while we still hold everything. Once a
 * capability has left the bounding set, nothing short of a new process
 * tree can bring it back: not execve of a setuid-root file, not file caps.
 */
export function dropBoundingSet(keep: readonly string[]): string[] {
  const dropped: string[] = [];
  for (let bit = 0; bit <= lastCap(); bit++) {
    const name = CAPABILITIES[bit]!;
    if (keep.includes(name)) continue;
    prctl(PR_CAPBSET_DROP, bit, `prctl(PR_CAPBSET_DROP, ${name})`);
    dropped.push(name);
  }
  return dropped;
}

/**
 * capset(2) with a version-3 header: two 32-bit words per set, for the 64
 * possible capabilities. Effective = permitted = what we keep; inheritable
 * empty, as Docker has done since 20.10.14 (CVE-2022-24769): for root,
 * execve computes the new permitted set as inheritable | bounding, so an
 * inheritable capability outside the bounding set would come straight back.
 */
export function setCapabilities(keep: readonly string[]): void {
  const mask = capabilityMask(keep);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(_LINUX_CAPABILITY_VERSION_3, 0);
  header.writeInt32LE(0, 4); // 0: the calling thread
  const data = Buffer.alloc(24);
  for (const [i, word] of [Number(mask & 0xffffffffn), Number(mask >> 32n)].entries()) {
    data.writeUInt32LE(word, i * 12); // effective
    data.writeUInt32LE(word, i * 12 + 4); // permitted
    data.writeUInt32LE(0, i * 12 + 8); // inheritable
  }
  if (_capset(header, data) < 0) throw new SyscallError('capset', koffi.errno());
}

/**
 * Ambient capabilities survive execve of a program that is not root and has
 * no file caps. unshare --keep-caps raised them all to carry the init across
 * its exec into the new user namespace; the target must not inherit them.
 */
export function clearAmbient(): void {
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 'prctl(PR_CAP_AMBIENT_CLEAR_ALL)');
}

/** The whole capability lock, in the only order that works; returns what left the bounding set. */
export function applyCapabilities(keep: readonly string[]): string[] {
  const short = keep.map((c) => c.slice(4).toLowerCase());
  showCommand(`setpriv --bounding-set=-all${short.map((c) => ',+' + c).join('')} --inh-caps=-all --ambient-caps=-all -- CMD`);
  const dropped = dropBoundingSet(keep);
  setCapabilities(keep);
  clearAmbient();
  return dropped;
}
