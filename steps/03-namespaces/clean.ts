// npm run clean, step 03's part: jails whose launcher was killed. Every
// jail's PID 1 runs one of our bundled inits; killing it ends its whole PID
// namespace, and with the last process go its namespaces (and the veth end
// inside). Runs first, so the network and cgroups are free to remove.
import { basename } from 'node:path';
import { cacheDir } from '../../lib/bundle.mjs';
import { cmdline, listPids } from '../../lib/proc.ts';
import { isAlive } from '../../lib/state.ts';

/** A process running a bundled init: node …/node_modules/.cache/build-a-jail/NN-step-init-STAMP.cjs (or .mjs, for an init that must stay a module). */
const isJailInit = (argv: string[]): boolean => argv.some((a) => a.startsWith(cacheDir + '/') && /^\d\d-[\w-]+-init-[0-9a-f]{12}\.[cm]js$/.test(basename(a)));

export async function clean(): Promise<string[]> {
  const inits = listPids().filter((pid) => pid !== process.pid && isJailInit(cmdline(pid) ?? []));
  for (const pid of inits) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  // the kernel tears a namespace down when its last process is reaped
  const deadline = Date.now() + 5000;
  while (inits.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return inits.length ? [`stopped ${inits.length} jail(s) (SIGKILL to their PID 1)`] : [];
}
