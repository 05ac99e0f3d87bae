// Step 08's init as a function: step 04's god process with the locks put
// between its two halves, in runc's order (locks.ts says why this order):
//   readSpec, prepareLocks            libseccomp loaded, the filter built (the host's /lib is
//                                     still here), while the launcher does its part
//   wait for "go"                     the launcher wrote the ID maps and made the rootfs usable
//   buildPrison                       private mounts, the root, /proc /sys /dev, hostname, pivot_root
//   applyPathLocks                    masked and read-only /proc and /sys paths
//   then either the escape payload    (the escape lab: every lock on, then an attempt instead of a target)
//   or superviseTarget                capabilities, no_new_privs, seccomp in the main thread, then spawn
// Step 08's init.ts calls it as it is (also for step 09's jails, whose root
// is an overlay: spec.overlay); step 10's adds its exec server.
// Every module is imported statically, into the init's one bundle: after
// pivot_root and seccomp an import() could not find its file, or could not
// even open it.
import { die, readSpec, sendToLauncher, waitForGo } from '../03-namespaces/handshake.ts';
import { buildPrison, superviseTarget, type SuperviseOptions } from '../04-pivot-root/god.ts';
import { attemptEscape } from './escapes.ts';
import type { HardenedSpec } from './jail.ts';
import { applyLocks, applyPathLocks, prepareLocks, type PreparedLocks } from './locks.ts';

/**
 * PID 1 of a locked jail, from the handshake to the target's exit. Its root
 * is a bind of spec.rootfs, or the overlay spec.overlay names (steps 08
 * --ssh, 09, 10). `supervise` gives superviseTarget its options (step 10
 * keeps the channel).
 */
export async function runHardenedInit<S extends HardenedSpec>(supervise?: (spec: S) => SuperviseOptions): Promise<void> {
  const started = readSpec<S>();
  // the filter is built while the launcher still works (ID maps, idmapped
  // layers, cgroup): nothing in it depends on what the launcher does; a
  // failure waits for "go", when the launcher listens for an "error" line
  const early = prepareOrError(started.locks);
  // a pooled init (step 10) started before its jail was known: "go" brings the spec
  const spec = (await waitForGo<S>(started.namespaces.includes('user'))) ?? started;
  const prepared = JSON.stringify(spec.locks) === JSON.stringify(started.locks) ? early : prepareOrError(spec.locks);
  if (prepared instanceof Error) die(prepared);
  buildPrison(spec);
  try {
    applyPathLocks(spec.locks);
  } catch (err) {
    die(err);
  }

  if (spec.escape !== undefined) {
    // payload mode: the same locks, in the same (main) thread, then the attempt
    try {
      applyLocks(spec.locks, prepared);
    } catch (err) {
      die(err);
    }
    try {
      const result = await attemptEscape(spec.escape);
      sendToLauncher('result ' + JSON.stringify(result));
    } catch (err) {
      die(err);
    }
    process.exit(0);
  }

  superviseTarget(spec, () => applyLocks(spec.locks, prepared), supervise?.(spec));
}

function prepareOrError(locks: HardenedSpec['locks']): PreparedLocks | Error {
  try {
    return prepareLocks(locks);
  } catch (err) {
    return err as Error;
  }
}
