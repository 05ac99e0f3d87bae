// npm run clean, step 06's part: the cgroups a killed run left under
// build-a-jail, in every hierarchy (on v1 each controller's, devices too),
// found by name, emptied (kill-then-rmdir, removal.ts) and removed. Runs
// after step 03's part has stopped the jails whose launcher was killed.
import { cleanCgroups } from './removal.ts';

export async function clean(): Promise<string[]> {
  const removed = await cleanCgroups();
  return removed.length ? [`removed cgroups: ${removed.join(' ')}`] : [];
}
