// The test VM's initramfs: the host's static busybox, the kernel modules the
// VM needs before it can see the host's disk, and /init (GUEST_INIT below).
// Written as a cpio "newc" archive by hand (a 110-byte header per file), so
// the host needs no cpio tool. Cached by content: the same inputs make the
// same image, built once.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { loadOrder, vmCache, type Kernel } from './kernel.ts';

/**
 * Loaded by /init before anything else, dependencies first (from modules.dep).
 * virtio + 9p to reach the host's files, overlay for a writable root,
 * qemu_fw_cfg to read the command the host passes. The rest is what the
 * workshop's steps use inside: loading them at boot saves a modprobe each
 * time a test needs them (any other module still loads on demand, see init).
 */
export const BOOT_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay', 'qemu_fw_cfg'];
export const STEP_MODULES = [
  'veth', 'bridge', 'loop',
  // iptables (Debian's is iptables-nft) for the jails' NAT and forwarding rules
  'nf_tables', 'nft_compat', 'nft_chain_nat', 'nft_masq', 'nft_ct', 'xt_MASQUERADE', 'xt_comment', 'xt_conntrack', 'xt_tcpudp', 'xt_addrtype',
];

/** Where the host's busybox-static puts its binary. */
const BUSYBOX = '/bin/busybox';

/** Builds (or finds in the cache) the initramfs for this kernel; returns its path. */
export function initramfs(k: Kernel): string {
  const modules = loadOrder(k.modules, [...BOOT_MODULES, ...STEP_MODULES]);
  const files: CpioEntry[] = [
    ...['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'modules', 'lib', 'lib/modules', `lib/modules/${k.release}`].map(dir),
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] }, // stdio of /init before devtmpfs is mounted
    { name: 'bin/busybox', mode: 0o100755, data: staticBusybox() },
    { name: 'init', mode: 0o100755, data: Buffer.from(GUEST_INIT) },
    { name: 'sbin/modprobe', mode: 0o100755, data: Buffer.from(GUEST_MODPROBE) },
    { name: 'modules/order', mode: 0o100644, data: Buffer.from(modules.map((m) => flat(m.path) + (m.optional ? ' optional' : '')).join('\n') + '\n') },
    ...modules.map((m) => ({ name: `modules/${flat(m.path)}`, mode: 0o100644, data: readFileSync(join(k.modules, m.path)) })),
  ];
  const image = cpio(files);
  const path = join(vmCache(), `initramfs-${createHash('sha256').update(image).digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(path)) utimesSync(path, new Date(), new Date()); // in use: see removeOtherImages
  else writeAtomically(path, image);
  removeOtherImages(path);
  return path;
}

const dir = (name: string): CpioEntry => ({ name, mode: 0o040755 });
/** kernel/net/9p/9pnet.ko -> 9pnet.ko: module file names are unique. */
const flat = (modulePath: string): string => modulePath.replace(/^.*\//, '');

/** A dynamically linked busybox would find no libc in the initramfs. */
function staticBusybox(): Buffer {
  if (!existsSync(BUSYBOX)) throw new JailError(`${BUSYBOX} is missing`, 'install it: apt-get install busybox-static');
  const elf = readFileSync(BUSYBOX);
  if (hasInterpreter(elf)) throw new JailError(`${BUSYBOX} is dynamically linked`, 'install the static one: apt-get install busybox-static');
  return elf;
}

/** ELF64: a PT_INTERP program header names the dynamic loader. */
function hasInterpreter(elf: Buffer): boolean {
  const PT_INTERP = 3;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return true;
  }
  return false;
}

function writeAtomically(path: string, data: Buffer): void {
  const tmp = join(vmCache(), `.initramfs-${process.pid}.tmp`);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Images for other inputs (an older kernel or module list) are removed once
 * they are a day old: not at once, because a run started from another
 * checkout may be about to boot one.
 */
function removeOtherImages(keep: string): void {
  const dayAgo = Date.now() - 24 * 3600 * 1000;
  for (const name of readdirSync(vmCache())) {
    const path = join(vmCache(), name);
    if (/^initramfs-\w+\.cpio$/.test(name) && path !== keep && statSync(path).mtimeMs < dayAgo) rmSync(path, { force: true });
  }
}

// ---------------------------------------------------------------------------
// cpio newc: "070701", 13 eight-digit hex fields, the name, then the data;
// name and data each padded to 4 bytes; a TRAILER!!! entry ends the archive.

export interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

export function cpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => parts.push(...cpioEntry(e, i + 1)));
  parts.push(...cpioEntry({ name: 'TRAILER!!!', mode: 0 }, 0));
  return Buffer.concat(parts);
}

function cpioEntry(e: CpioEntry, ino: number): Buffer[] {
  const data = e.data ?? Buffer.alloc(0);
  const name = Buffer.from(e.name + '\0');
  const isDir = (e.mode & 0o170000) === 0o040000;
  const fields = [ino, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0];
  const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''));
  return [header, name, pad(header.length + name.length), data, pad(data.length)];
}

const pad = (length: number): Buffer => Buffer.alloc((4 - (length % 4)) % 4);

// ---------------------------------------------------------------------------
// What runs inside. The host passes a small sh file through QEMU's fw_cfg
// (no temp file, no kernel command line quoting): JAIL_NONCE, JAIL_REPO and
// JAIL_SCRIPT, the command as a script for the host's own /bin/sh.

/**
 * Lines the host parses, prefixed with a per-run nonce so that no output of
 * the command can be mistaken for them: "NONCE ready UPTIME" just before the
 * command starts, "NONCE exit STATUS" after it ended.
 */
export const GUEST_INIT = `#!/bin/busybox sh
# PID 1 of the test VM. Everything here is plain busybox; the command runs in
# the host's own root filesystem, shared read-only over 9p with a tmpfs overlay.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
R=/newroot

halt() {
  sync
  poweroff -f
  echo o > /proc/sysrq-trigger
}
# The host sees no "exit" line and reports a failed boot with these words.
die() {
  echo "vm: $*"
  halt
}

mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || die "cannot mount /proc, /sys, /dev"
# One module a line, in load order; "optional" marks a soft dependency that
# may fail when another module provides the same (crc32c_intel without SSE4.2).
while read -r m optional; do
  insmod "/modules/$m" || [ -n "$optional" ] || die "cannot load module $m"
done < /modules/order

cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/build-a-jail/env/raw
[ -r $cfg ] || die "no command from the host (fw_cfg entry opt/build-a-jail/env is missing)"
. $cfg
[ "$JAIL_DEBUG" = 1 ] && set -x

# 9p: msize is the largest message virtio allows (fewer round trips), cache=loose
# lets the guest cache what it read: the root is read-only and does not change.
p9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw $R
mount -t 9p -o $p9,ro,cache=loose hostroot /lower || die "cannot mount the host's root over 9p"
mount -t tmpfs -o mode=0755 rw /rw && mkdir /rw/upper /rw/work
# redirect_dir=on: renaming a directory of the host's root (the steps swap a
# rebuilt rootfs in with renameat2) works instead of failing with EXDEV.
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,redirect_dir=on overlay $R || die "cannot mount the overlay root"

mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=0755 run $R/run
mkdir -p $R/run/lock

# The repo, at its host path, mounted after /tmp and /run: either may hold it
# (a CI clone in a temp dir would be hidden under a fresh tmpfs).
# cache=loose: node resolves modules with many stat() calls, each a round trip
# to the host without a cache (tsx starts 40% faster with it). The host does not
# change the repo while the VM runs; what the guest writes reaches the host at
# the latest with the sync before "exit".
mkdir -p "$R$JAIL_REPO"
mount -t 9p -o $p9,cache=loose repo "$R$JAIL_REPO" || die "cannot mount the repo $JAIL_REPO over 9p"

# Pure cgroup v2: one unified hierarchy and nothing else, mounted as systemd
# does. The command runs in a leaf, as a login session does on a systemd host,
# not in the root cgroup (which is exempt from the rules the steps must obey).
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup || die "cannot mount cgroup2"
echo "+cpu +memory +pids +io +cpuset" > $R/sys/fs/cgroup/cgroup.subtree_control || die "cannot enable the cgroup controllers"
mkdir $R/sys/fs/cgroup/session.scope

# Every module of the kernel, for modprobe inside (iptables calls it) and for
# the kernel's own on-demand loading (/sbin/modprobe here chroots into $R).
mkdir -p /lib/modules/$(uname -r) $R/lib/modules/$(uname -r)
mount -t 9p -o $p9,ro,cache=loose modules /lib/modules/$(uname -r) || die "cannot mount the kernel's modules"
mount --bind /lib/modules/$(uname -r) $R/lib/modules/$(uname -r)

hostname build-a-jail-vm
ip link set lo up

echo "$JAIL_NONCE ready $(cut -d' ' -f1 /proc/uptime)"
(
  echo 0 > $R/sys/fs/cgroup/session.scope/cgroup.procs || { echo "vm: cannot enter the cgroup session.scope"; exit 125; }
  exec env -i chroot $R /bin/sh -c "$JAIL_SCRIPT" < /dev/null
)
status=$?
# Flush before saying "exit": the host may read what the command wrote as soon as it sees it.
sync
echo "$JAIL_NONCE exit $status"
halt
`;

/** The kernel runs this for on-demand modules; the host's kmod reads the modules mounted in $R. */
export const GUEST_MODPROBE = `#!/bin/busybox sh
exec /bin/chroot /newroot /sbin/modprobe "$@"
`;
