// node --import tsx bench/launch-loop.ts ROOTFS RUNS WARMUP
// Started by 04-start.ts (stdin on /dev/null, as hyperfine does for the
// others). Starts step 04's jail running /bin/true from this one, already
// running Node process — what a long-lived launcher (a service) pays per
// jail, without Node's and tsx's start-up — alternating with `node -e 0` so
// that both see the same load. Prints the milliseconds as JSON on stdout.
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { launchJail } from '../steps/03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../steps/04-pivot-root/jail.ts';

const [rootfs, runs, warmup] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4] ?? 1)];
process.env.JAIL_QUIET = '1';

const jailTrue = async () => {
  const status = await launchJail(pivotSpec(rootfs, 'jail', false, ['/bin/true']), { init: initPath });
  if (status !== 0) throw new Error(`the jail exited with ${status}`);
};
const nodeE0 = () =>
  new Promise<void>((resolve, reject) =>
    spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }).on('close', (code) => (code === 0 ? resolve() : reject(new Error(`node -e 0 exited with ${code}`)))),
  );

const times: Record<string, number[]> = { jail: [], node: [] };
for (let i = 0; i < warmup + runs; i++) {
  for (const [name, fn] of [['jail', jailTrue], ['node', nodeE0]] as const) {
    const t0 = performance.now();
    await fn();
    if (i >= warmup) times[name]!.push(performance.now() - t0);
  }
}
process.stdout.write(JSON.stringify(times) + '\n');
