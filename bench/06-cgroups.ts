// The cost of a limit: the same CPU-bound and memory-touching loops, run by
// the same busybox binary, on the host (chroot only) and inside a step-06
// jail with generous limits (--cpus 2 --memory 1G --pids 256). The lesson
// text claims containers run at native speed; this measures it.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { rootfsDir } from '../lib/state.ts';
import { median } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const runs = Number(process.env.BENCH_RUNS ?? 5);
const rootfs = rootfsDir('busybox');

const loops = {
  cpu: "awk 'BEGIN { for (i = 0; i < 3000000; i++) s += i * i }'",
  memory: "awk 'BEGIN { s = \"x\"; for (i = 0; i < 27; i++) s = s s; print length(s) > \"/dev/null\" }'",
};

/** busybox `time` prints "real 0m 1.23s"; we want the seconds. */
function realSeconds(stderr: string): number {
  const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(stderr);
  if (!m) throw new Error(`no timing in: ${stderr}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

function onHost(script: string): number {
  const r = spawnSync('chroot', [rootfs, '/bin/sh', '-c', `time ${script}`], { encoding: 'utf8' });
  return realSeconds(r.stderr);
}

function inJail(script: string): number {
  const r = spawnSync(process.execPath, ['bin/step.mjs', '6', '--cpus', '2', '--memory', '1G', '--pids', '256', '--', '/bin/sh', '-c', `time ${script}`], { cwd: repo, encoding: 'utf8', env: { ...process.env, JAIL_QUIET: '1' } });
  if (r.status !== 0) throw new Error(`jail failed: ${r.stderr}`);
  return realSeconds(r.stderr);
}

for (const [name, script] of Object.entries(loops)) {
  const host: number[] = [];
  const jail: number[] = [];
  for (let i = 0; i < runs; i++) {
    host.push(onHost(script));
    jail.push(inJail(script));
  }
  const h = median(host);
  const j = median(jail);
  console.log(`step 06: ${name.padEnd(6)} loop  host ${h.toFixed(2)} s   jail ${j.toFixed(2)} s   jail/host ${(j / h).toFixed(3)}  (median of ${runs})`);
}
