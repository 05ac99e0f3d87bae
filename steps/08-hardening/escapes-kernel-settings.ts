// Escapes through the kernel's own settings. A namespace isolates a view;
// these files are not a view, they configure the one kernel every jail
// shares. The kernel runs core_pattern's "|program" and a v1 cgroup's
// release_agent itself, as root, in the host's namespaces: whoever writes
// them runs code outside every jail. sysrq-trigger takes one byte to reboot
// the machine. The proof each attempt gives is the open for writing; it
// never writes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Escape } from './escapes.ts';
import { openForWriting, withFreshMount } from './escapes-tools.ts';

const seccompMount = { wall: 'seccomp', label: 'seccomp: mount', errno: 'EPERM', why: 'mount(2) is on the deny list: the filter answers before the kernel looks at anything else' } as const;
const noSysAdmin = { wall: 'caps', cap: 'SYS_ADMIN', label: 'no CAP_SYS_ADMIN', errno: 'EPERM', why: 'mounting needs CAP_SYS_ADMIN, which is not among the 14 capabilities the jail keeps' } as const;

export const corePattern: Escape = {
  name: 'core_pattern',
  title: 'open /proc/sys/kernel/core_pattern for writing',
  teaches: "When any process on the machine crashes, the kernel runs the program core_pattern names after a '|' — as root, in the host's namespaces. A jail that can write it owns the host at the next crash.",
  twin: 'exec 3>/proc/sys/kernel/core_pattern    # open it, never echo into it',
  stoppers: [
    { wall: 'userns', label: 'user namespace', errno: 'EACCES', why: "a sysctl file may be written only by the host's root uid, and the jail's root is an unprivileged uid out there" },
    { wall: 'maskPaths', label: 'read-only /proc/sys', errno: 'EROFS', why: '/proc/sys is bind-mounted read-only over itself: whoever passes the permission check meets the read-only mount' },
  ],
  attempt: () => openForWriting('core_pattern', '/proc/sys/kernel/core_pattern'),
};

export const sysrqTrigger: Escape = {
  name: 'sysrq_trigger',
  title: 'open /proc/sysrq-trigger for writing',
  teaches: "One byte written to /proc/sysrq-trigger reboots ('b'), crashes ('c') or freezes the host: the jail would stop every program on the machine, its neighbours' too.",
  twin: 'exec 3>/proc/sysrq-trigger    # open only: one byte would reboot the host',
  fixture: 'sysrq',
  stoppers: [
    { wall: 'userns', label: 'user namespace', errno: 'EACCES', why: "it is mode 0200, owned by the host's root, whom the jail's user namespace does not map: no capability of the jail applies to it" },
    { wall: 'maskPaths', label: 'read-only /proc/sysrq-trigger', errno: 'EROFS', why: '/proc/sysrq-trigger is bind-mounted read-only over itself' },
  ],
  // write-only (0200): there is no value to show
  attempt: () => openForWriting('sysrq_trigger', '/proc/sysrq-trigger', false),
};

export const freshProc: Escape = {
  name: 'fresh_proc',
  title: 'mount a fresh proc, open its core_pattern',
  teaches: "The jail's read-only /proc/sys is only a mount. Root with CAP_SYS_ADMIN mounts a second proc beside it, and nobody made that one's sysctl files read-only: the mask is undone.",
  twin: 'mkdir /tmp/p && mount -t proc proc /tmp/p && exec 3>/tmp/p/sys/kernel/core_pattern',
  stoppers: [
    seccompMount,
    noSysAdmin,
    {
      wall: 'userns',
      label: 'user namespace',
      errno: 'EPERM',
      why: "in a user namespace the kernel mounts a new proc only if the jail's own is fully visible — the masked paths say it is not (EPERM) — and its sysctl files would still be host root's",
    },
  ],
  attempt: () => withFreshMount('fresh_proc', 'proc', null, (dir) => openForWriting('fresh_proc', join(dir, 'sys/kernel/core_pattern'))),
};

export const releaseAgent: Escape = {
  name: 'release_agent',
  title: 'mount cgroup v1, open release_agent',
  teaches:
    "A cgroup v1 hierarchy names a program in release_agent that the kernel runs as host root when a cgroup empties (CVE-2022-0492). Root that may mount the host's hierarchy again, in its own mount namespace, can point it anywhere.",
  twin: 'mkdir /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && exec 3>/tmp/cg/release_agent',
  fixture: 'cgroup-v1',
  stoppers: [
    seccompMount,
    noSysAdmin,
    {
      wall: 'userns',
      label: 'user namespace',
      errno: 'EPERM',
      why: "a user namespace may not mount the host's v1 hierarchies (they belong to the host's cgroup namespace), and release_agent wants CAP_SYS_ADMIN in the host's user namespace since CVE-2022-0492",
    },
  ],
  attempt() {
    const controllers = v1Hierarchy();
    if (!controllers) return { name: 'release_agent', out: false, evidence: 'no cgroup v1 hierarchy on this host: release_agent exists only in v1', error: 'n/a' };
    return withFreshMount('release_agent', 'cgroup', controllers, (dir) => openForWriting('release_agent', join(dir, 'release_agent')));
  },
};

/**
 * The controllers of one v1 hierarchy that the host has, as mount options.
 * A hierarchy is mounted again only with exactly its controllers (cpu,cpuacct
 * together where systemd bound them), so they come from /proc/cgroups:
 * `subsys_name hierarchy num_cgroups enabled`, hierarchy 0 meaning v2 or none.
 */
function v1Hierarchy(): string | undefined {
  const rows = readFileSync('/proc/cgroups', 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(/\s+/))
    .filter(([, hierarchy, , enabled]) => hierarchy !== '0' && enabled === '1');
  const pick = rows.find(([name]) => name === 'memory') ?? rows[0];
  if (!pick) return undefined;
  return rows.filter(([, h]) => h === pick[1]).map(([name]) => name).join(',');
}

export const kernelSettingEscapes = [corePattern, releaseAgent, freshProc, sysrqTrigger];
