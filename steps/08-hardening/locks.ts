// Step 08: the locks, in order. The order is the lesson:
//   clone()        the user namespace (made by unshare, with the others)
//   before pivot   libseccomp is loaded and the filter built (the host's /lib is still there)
//   after pivot    masked and read-only paths (mounts: still allowed)
//   then, in the main thread, just before the target is spawned:
//     capabilities  bounding set first (dropping needs CAP_SETPCAP), then capset, ambient cleared
//     no_new_privs  no execve can raise privileges again: no setuid, no file caps
//     seccomp       LAST: after it mount, pivot_root and unshare are gone for
//                   good — and loading it without CAP_SYS_ADMIN needs no_new_privs
// runc's standard_init_linux.go has the same order; without no_new_privs it
// loads the filter before dropping capabilities, while it still may.
import { readdirSync, readFileSync } from 'node:fs';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { applyCapabilities, capabilitiesIn, DOCKER_DEFAULT_CAPS, prctl } from './capabilities.ts';
import type { Locks } from './jail.ts';
import { lockSystemPaths } from './paths.ts';
import { buildFilter, type Filter } from './seccomp.ts';

const PR_SET_DUMPABLE = 4;
const PR_SET_NO_NEW_PRIVS = 38;

/** What must be ready before pivot_root: the filter, built from the host's libseccomp. */
export interface PreparedLocks {
  filter?: Filter;
}

export function prepareLocks(locks: Locks): PreparedLocks {
  return locks.seccomp ? { filter: buildFilter(locks.caps) } : {};
}

/** After pivot_root, while mounting is still allowed. */
export function applyPathLocks(locks: Locks): void {
  if (!locks.maskPaths) return;
  heading('Lock: masked and read-only paths (after pivot_root, before seccomp forbids mount)');
  const { masked, readonly } = lockSystemPaths();
  explain(`masked ${masked.length} paths, made ${readonly.length} read-only (the rest of runc's list does not exist on this kernel)`);
}

/**
 * PR_SET_NO_NEW_PRIVS: from now on execve never grants more than the caller
 * has — setuid bits and file capabilities are ignored. It cannot be unset,
 * and it is inherited by every child.
 */
export function setNoNewPrivs(): void {
  showCommand('setpriv --no-new-privs -- CMD');
  prctl(PR_SET_NO_NEW_PRIVS, 1, 'prctl(PR_SET_NO_NEW_PRIVS)');
}

/**
 * The init stays alive beside the target, and only its main thread gives up
 * capabilities (they are per thread). Non-dumpable, it cannot be ptraced or
 * have its /proc/1/mem read by the jail without CAP_SYS_PTRACE: the target
 * cannot borrow the capabilities of the init's other threads.
 */
function setNotDumpable(): void {
  prctl(PR_SET_DUMPABLE, 0, 'prctl(PR_SET_DUMPABLE, 0)');
}

function loadFilter(filter: Filter): void {
  showCommand('# no util-linux twin; systemd-run -p SystemCallFilter=~@mount … and docker run --security-opt seccomp=PROFILE.json load the same kind of filter');
  filter.load();
  explain(`seccomp: ${filter.rules.length} rules in force (${filter.rules.slice(0, 6).join(', ')}, …)`);
  if (filter.skipped.length) explain(`not on this architecture, or unknown to this libseccomp: ${filter.skipped.join(' ')}`);
  if (filter.lifted.length) explain(`lifted, because the jail keeps the capability they guard: ${filter.lifted.join(' ')}`);
}

/**
 * Every lock the init applies itself, in the main thread, right before the
 * target is spawned (or the escape payload runs). Nothing of the init's own
 * setup needs a privilege after this.
 */
export function applyLocks(locks: Locks, prepared: PreparedLocks): void {
  const all = new Set(capabilitiesIn(thread('CapBnd')));
  const cutsCaps = [...all].some((c) => !locks.caps.includes(c));
  if (!cutsCaps && !locks.noNewPrivs && !prepared.filter) return;
  setNotDumpable();
  if (prepared.filter && !locks.noNewPrivs) {
    heading('Lock: seccomp, early — without no_new_privs only CAP_SYS_ADMIN may load a filter, and it is about to go');
    loadFilter(prepared.filter);
  }
  if (cutsCaps) {
    const extra = locks.caps.filter((c) => !DOCKER_DEFAULT_CAPS.includes(c));
    const less = DOCKER_DEFAULT_CAPS.filter((c) => !locks.caps.includes(c));
    heading(`Lock: capabilities — keep ${locks.caps.length} of ${all.size}${extra.length ? `, with ${extra.join(' ')}` : ''}${less.length ? `, without ${less.join(' ')}` : ''}`);
    applyCapabilities(locks.caps);
  }
  if (locks.noNewPrivs) {
    heading('Lock: no_new_privs — setuid binaries and file capabilities grant nothing from here on');
    setNoNewPrivs();
  }
  if (prepared.filter && locks.noNewPrivs) {
    heading('Lock: seccomp, last — no_new_privs lets a process without CAP_SYS_ADMIN load it');
    loadFilter(prepared.filter);
  }
  explain(`main thread now: CapEff=${thread('CapEff')} CapBnd=${thread('CapBnd')} NoNewPrivs=${thread('NoNewPrivs')} Seccomp=${thread('Seccomp')}`);
  const others = otherThreads();
  if (others.length) explain(`the init's ${others.length} other thread(s): ${others.join('; ')} (capabilities are per thread; the target is spawned by the main one)`);
}

const thread = (field: string, status = readFileSync('/proc/thread-self/status', 'utf8')): string => status.match(new RegExp(`^${field}:\\s*(\\S+)`, 'm'))?.[1] ?? '?';

/** What the init's other threads hold: /proc/self/task/TID/status. */
function otherThreads(): string[] {
  const me = readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0];
  const out: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    if (tid === me) continue;
    try {
      const s = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      out.push(`${thread('Name', s)} CapEff=${thread('CapEff', s)} Seccomp=${thread('Seccomp', s)}`);
    } catch {}
  }
  return out;
}
