// Step 06: rationing the prisoners' food. Without limits one clever program —
// a fork bomb, a memory hog, a busy loop — starves the whole host. A cgroup
// is a group of processes that the kernel rations: CPU time, which CPUs,
// memory, how many processes, how fast the disks, which devices. And a cgroup
// is a directory: making one is `mkdir`, a limit is one line written into one
// of its files (limits.ts, the core of this step), joining it is writing a PID
// into cgroup.procs.
//
// This file is the step as one hook around a jail, in the order that matters:
//   prepare()  find the host's cgroups, mkdir the jail's leaf, write its limits,
//              and register the leaf's removal in the same place
//   attach()   move the jail's init in while it still waits for "go": the
//              target is born inside and never runs unlimited
//              (step 10's pool moves a waiting init in ahead: joinAhead)
//   report()   what the jail used, read from the same files
// The other files, each one idea:
//   hierarchy.ts  v1, v2 or hybrid; the leaf, subtree_control, joining
//   limits.ts     the limits as file writes, each beside its shell twin
//   flags.ts      --memory 64M and friends into the kernel's units
//   usage.ts      the report: CPU time, throttling, peaks, OOM kills
//   removal.ts    kill-then-rmdir, and cleanCgroups for `npm run clean` (clean.ts)
//   cgroupfs.ts   reading and writing one control file
import type { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, ok } from '../../lib/output.ts';
import type { JailHook, JailSpec } from '../../lib/spec.ts';
import { WORKSHOP_CGROUP } from './cgroupfs.ts';
import { addProcess, createCgroup, detectCgroups, planCgroup, sayWhichCgroups, type JailCgroup } from './hierarchy.ts';
import { writeLimits, type Limits } from './limits.ts';
import { removeCgroup } from './removal.ts';
import { reportUsage, weighInit } from './usage.ts';

/**
 * `joined`: the jail's cgroup was made and its init moved in ahead of time
 * (joinAhead: step 10's pool, while the init waited for its jail). The hook
 * then only writes the limits; the init is inside already, before "go".
 */
export function cgroupHook(limits: Limits, opts: { joined?: JailCgroup } = {}): JailHook {
  const made = new Map<string, JailCgroup>();
  const cgroupOf = (spec: JailSpec): JailCgroup => {
    const cg = made.get(spec.name);
    if (!cg) throw new JailError(`the cgroup of ${spec.name} was not made`, 'this looks like a bug in the workshop: attach() ran before prepare()');
    return cg;
  };
  return {
    name: 'cgroups',
    async prepare(spec: JailSpec, cleanup: CleanupStack) {
      heading(`Ration the jail: a cgroup for ${spec.name}`);
      const tree = detectCgroups();
      sayWhichCgroups(tree);
      const cg = planCgroup(tree, spec.name, limits);
      if (opts.joined && (opts.joined.name !== cg.name || opts.joined.controllers.join() !== cg.controllers.join())) {
        throw new JailError(`the cgroup made ahead (${opts.joined.name}: ${opts.joined.controllers.join(' ')}) is not this jail's (${cg.name}: ${cg.controllers.join(' ')})`, 'this is a bug in the pool: it must hand out only inits of the same shape');
      }
      cleanup.defer(`remove cgroup ${WORKSHOP_CGROUP}/${spec.name}`, () => removeCgroup(cg));
      if (opts.joined) explain('made ahead, with the init already inside; only the limits are written now');
      else createCgroup(cg);
      writeLimits(cg, limits);
      made.set(spec.name, cg);
    },
    async attach(spec: JailSpec, initPid: number) {
      const cg = cgroupOf(spec);
      if (!opts.joined) {
        explain('The jail joins its cgroup before the target runs: its children are born inside.');
        addProcess(cg, initPid);
      }
      weighInit(initPid, limits);
      ok(`PID ${initPid} and all it starts are limited`);
    },
    async report(spec: JailSpec) {
      const cg = made.get(spec.name);
      if (cg) reportUsage(cg, limits);
    },
  };
}

/**
 * The cgroup of a jail to come, made now and joined by its init, which waits
 * for "go" (step 10's pool): a move into a cgroup waits for the kernel's RCU
 * (a few ms, per hierarchy on v1), paid here rather than when the jail is
 * asked for. `limits` fixes the controllers; cgroupHook({ joined }) writes
 * the jail's own limits later. removeCgroup undoes it.
 */
export async function joinAhead(name: string, limits: Limits, pid: number): Promise<JailCgroup> {
  const cg = planCgroup(detectCgroups(), name, limits);
  createCgroup(cg);
  try {
    writeLimits(cg, limits);
    addProcess(cg, pid);
  } catch (err) {
    await removeCgroup(cg);
    throw err;
  }
  return cg;
}
