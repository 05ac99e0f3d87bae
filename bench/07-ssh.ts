// From `npm run step 7 -- --detach` to the first successful ssh login, warm
// cache (step 01's Debian rootfs already built; the demo's overlay top is
// new at every start). --detach itself returns only once a
// real login works, so its wall time is the measure. Aim: under 3 s.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { median } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const runs = Number(process.env.BENCH_RUNS ?? 5);
const step7 = (...args: string[]) => spawnSync(process.execPath, ['bin/step.mjs', '7', ...args], { cwd: repo, env: { ...process.env, JAIL_QUIET: '1' }, encoding: 'utf8' });

step7('--stop');
const warm = step7('--detach'); // builds the rootfs and the key on a first run; not measured
if (warm.status !== 0) throw new Error(`step 7 --detach failed: ${warm.stderr}`);
step7('--stop');

const times: number[] = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const r = step7('--detach');
  times.push(performance.now() - t0);
  step7('--stop');
  if (r.status !== 0) throw new Error(`step 7 --detach failed: ${r.stderr}`);
}
console.log(`step 07: --detach to first ssh login, warm: median ${(median(times) / 1000).toFixed(2)} s over ${runs} runs (${times.map((t) => (t / 1000).toFixed(2)).join(' ')})`);
