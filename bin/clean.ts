// npm run clean [-- --all]: removes whatever a killed run left on the host —
// running jails, veths, the bridge, iptables rules, leases, cgroups,
// half-built rootfs trees — found by name. Each step that makes something
// on the host contributes its own steps/NN-*/clean.ts (export clean()), found
// here the way bin/step.mjs finds main.ts, and run in step order: jails are
// stopped before their network and cgroups go. Idempotent; safe while nothing runs.
// The built rootfs trees and the download cache stay (--all removes them too).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runMain } from '../lib/errors.ts';
import { explain, heading, ok } from '../lib/output.ts';
import { repoPath } from '../lib/paths.ts';
import { requireRoot } from '../lib/preflight.ts';
import { jailCache, jailHome } from '../lib/state.ts';

/** What a step's clean.ts exports: it removes its leftovers and says what they were. */
type Clean = () => Promise<string[]>;

async function stepCleaners(): Promise<[string, Clean][]> {
  const steps = repoPath('steps');
  const found: [string, Clean][] = [];
  for (const dir of readdirSync(steps).filter((d) => /^\d\d-/.test(d)).sort()) {
    const file = join(steps, dir, 'clean.ts');
    if (!existsSync(file)) continue;
    const mod = (await import(pathToFileURL(file).href)) as { clean?: Clean };
    if (typeof mod.clean !== 'function') throw new Error(`${file} does not export clean()`);
    found.push([dir, mod.clean]);
  }
  return found;
}

/** The benchmarks' scratch dirs (bench/measure.ts removes them, unless it was killed) and rootless users' bundle caches (lib/bundle.mjs). */
function removeBenchScratch(): string[] {
  const gone = readdirSync('/tmp').filter((e) => e.startsWith('baj-bench-') || e.startsWith('build-a-jail-bundles-')).map((e) => join('/tmp', e));
  for (const p of gone) rmSync(p, { recursive: true, force: true });
  return gone;
}

await runMain(async () => {
  const all = process.argv.includes('--all');
  if (process.argv.includes('--help')) {
    console.log('npm run clean [-- --all]: remove what the workshop left on the host (--all: also the rootfs trees and the cache)');
    return 0;
  }
  requireRoot('cleaning up');
  heading('Removing what the workshop left behind');
  for (const [step, clean] of await stepCleaners()) {
    const removed = await clean();
    if (removed.length) explain(`${step}: ${removed.join(', ')}`);
  }
  const scratch = removeBenchScratch();
  if (scratch.length) explain(`scratch: removed ${scratch.join(' ')}`);
  if (all) {
    rmSync(jailHome(), { recursive: true, force: true });
    rmSync(jailCache(), { recursive: true, force: true });
    explain(`removed ${jailHome()} and ${jailCache()}`);
  }
  ok('the host is clean');
  return 0;
});
