// Escapes through what a jail shares with the host by design — kernel
// objects no namespace of the lesson copies. A new user namespace is a door
// the kernel opens to anyone: inside it, every capability, and with them the
// code paths of most kernel privilege bugs. The host's network, shared with
// --net host, obeys CAP_NET_ADMIN. The keyrings of a uid are one per user,
// not per jail: root in a jail without a user namespace is the host's root
// to the key store.
import koffi from 'koffi';
import { SyscallError } from '../../lib/libc.ts';
import type { Escape } from './escapes.ts';
import { errnoInMessage, failed, runInJail } from './escapes-tools.ts';

/** The lab's own link on the host (a dummy, or an empty bridge): the only one an attempt ever touches. */
export const LAB_LINK = 'baj-lab0';
/** A harmless change that the host can see: the link's MTU, 1500 when made. */
export const LAB_MTU = 1280;

/** How an attempt that ran a tool failed: SIGSYS is a seccomp kill, otherwise the errno its message names. */
function toolError(status: number, output: string): string {
  if (status === 128 + 31) return 'SIGSYS';
  return errnoInMessage(output) ?? `exit ${status}`;
}

const popcount = (hex: string): number => [...BigInt('0x' + hex).toString(2)].filter((b) => b === '1').length;

export const nestedUserns: Escape = {
  name: 'nested_userns',
  title: 'unshare a new user namespace',
  teaches:
    'unshare(CLONE_NEWUSER) needs no privilege at all, and inside the new namespace the caller has every capability: it may mount, make namespaces, reach the code of filesystems and netfilter that most kernel privilege bugs live in. Node itself cannot (it has threads: EINVAL), so busybox does it.',
  twin: 'unshare -U -r cat /proc/self/uid_map /proc/self/status',
  fixture: 'userns',
  stoppers: [{ wall: 'seccomp', label: 'seccomp: unshare(CLONE_NEWUSER)', errno: 'EPERM', why: 'the filter refuses unshare and clone with any CLONE_NEW* flag: no new namespace, so no capabilities in one' }],
  attempt() {
    const name = 'nested_userns';
    const r = runInJail('/bin/busybox', ['unshare', '-U', '-r', '/bin/busybox', 'cat', '/proc/self/uid_map', '/proc/self/status']);
    if (r.status !== 0) return { name, out: false, evidence: `unshare -U -r: ${r.output.split('\n')[0] || `exit status ${r.status}`}`, error: toolError(r.status, r.output) };
    const map = r.output.split('\n')[0]!.trim().replace(/\s+/g, ' ');
    const capEff = /^CapEff:\s*([0-9a-f]+)/m.exec(r.output)?.[1] ?? '0';
    const caps = popcount(capEff);
    return { name, out: caps > 0, evidence: `a user namespace of its own: uid_map "${map}", CapEff ${capEff} (${caps} capabilities)` };
  },
};

export const netAdmin: Escape = {
  name: 'net_admin',
  title: "change a host link's MTU (--net host)",
  teaches:
    "With --net host the jail shares the host's network namespace; with CAP_NET_ADMIN it may reconfigure it: take links down, add routes, flush the firewall. The lab changes only the MTU of its own link baj-lab0 and the host checks.",
  twin: `ip link set dev ${LAB_LINK} mtu ${LAB_MTU}`,
  hostNetwork: true,
  fixture: 'link',
  stoppers: [
    { wall: 'userns', label: 'user namespace', errno: 'EPERM', why: "the host's network namespace belongs to the host's user namespace: the jail's capabilities do not count there" },
    { wall: 'caps', cap: 'NET_ADMIN', label: 'no CAP_NET_ADMIN', errno: 'EPERM', why: 'reconfiguring a network needs CAP_NET_ADMIN, which is not among the 14' },
  ],
  attempt({ link = LAB_LINK }) {
    const name = 'net_admin';
    // never any other link: the lab made this one, by this name, for this
    if (!/^baj-lab\d$/.test(link)) return { name, out: false, evidence: `refusing to touch ${link}: not the lab's link`, error: 'EINVAL' };
    const r = runInJail('/bin/busybox', ['ip', 'link', 'set', 'dev', link, 'mtu', String(LAB_MTU)]);
    if (r.status !== 0) return { name, out: false, evidence: `ip link set dev ${link} mtu ${LAB_MTU}: ${r.output || `exit status ${r.status}`}`, error: toolError(r.status, r.output) };
    return { name, out: true, evidence: `ip link set dev ${link} mtu ${LAB_MTU}: done` };
  },
};

// The key store has no libc wrapper (libkeyutils has one; the rootfs has no libkeyutils)
const libc = koffi.load('libc.so.6');
const _syscall = libc.func('long syscall(long number, ...)');
const SYS = ({ x64: { add_key: 248, keyctl: 250 }, arm64: { add_key: 217, keyctl: 219 }, riscv64: { add_key: 217, keyctl: 219 } } as Record<string, { add_key: number; keyctl: number }>)[process.arch];
export const KEY_SPEC_USER_KEYRING = -4;
export const KEYCTL = { SETPERM: 5, UNLINK: 9, SEARCH: 10, READ: 11, SET_TIMEOUT: 15, INVALIDATE: 21 } as const;

function sys(name: 'add_key' | 'keyctl', call: string, ...args: unknown[]): number {
  if (!SYS) throw new Error(`${name}: unknown syscall number on ${process.arch}`);
  const ret = Number(_syscall(SYS[name], ...args));
  if (ret < 0) throw new SyscallError(call, koffi.errno());
  return ret;
}

/** keyctl(2) with integer arguments (SETPERM, UNLINK, SET_TIMEOUT, INVALIDATE). */
export function keyctl(op: number, ...ints: number[]): number {
  return sys('keyctl', `keyctl ${op}`, 'int', op, ...ints.flatMap((n) => ['long', n]));
}

/** add_key(2) of type "user" to a keyring: host side, for the lab's fixture. */
export function addUserKey(description: string, payload: string, keyring: number): number {
  const data = Buffer.from(payload);
  return sys('add_key', 'add_key', 'const char *', 'user', 'const char *', description, 'void *', data, 'size_t', data.length, 'int', keyring);
}

export const keyring: Escape = {
  name: 'keyring',
  title: "read a key from root's user keyring",
  teaches:
    "The kernel keeps keys (disk-encryption keys, Kerberos tickets, NFS and CIFS credentials) per user, not per namespace: root in a jail without a user namespace finds the host root's user keyring and reads what is in it.",
  twin: 'keyctl print $(keyctl search @u user <name>)   (keyutils; the rootfs has none, so the lab calls keyctl(2) itself)',
  fixture: 'key',
  stoppers: [
    { wall: 'seccomp', label: 'seccomp: keyctl', errno: 'EPERM', why: 'keyctl(2), add_key(2) and request_key(2) are on the deny list' },
    { wall: 'userns', label: 'user namespace', errno: 'ENOKEY', why: "the jail's root is an unprivileged uid out there: its user keyring is another, empty one, where root's key is not found" },
  ],
  attempt({ key = '' }) {
    const name = 'keyring';
    let id: number;
    try {
      id = sys('keyctl', 'keyctl search @u', 'int', KEYCTL.SEARCH, 'int', KEY_SPEC_USER_KEYRING, 'const char *', 'user', 'const char *', key, 'int', 0);
    } catch (err) {
      return failed(name, err, `keyctl search @u user ${key}`);
    }
    const buf = Buffer.alloc(256);
    try {
      const n = sys('keyctl', 'keyctl read', 'int', KEYCTL.READ, 'int', id, 'void *', buf, 'size_t', buf.length);
      return { name, out: true, evidence: `found key ${id} "${key}" in root's user keyring, and read it: "${buf.toString('utf8', 0, Math.min(n, buf.length))}"` };
    } catch (err) {
      return failed(name, err, `found key ${id} but could not read it`);
    }
  },
};

export const sharedObjectEscapes = [nestedUserns, netAdmin, keyring];
