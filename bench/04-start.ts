// node --import tsx bench/04-start.ts [--runs N] [--rounds N]
// Start-to-exit of a jail that runs /bin/true — new uts, pid, mount, net and
// ipc namespaces, pivot_root, /proc /sys /dev — beside the tools a learner
// could use instead, measured in one run: unshare, bubblewrap, runc, and
// `node -e 0`, the floor under any launcher written for Node. Rounds
// alternate the tools, so that a busy minute on the machine hits them all.
// Aim: `npm run step 4` less npm's own start (`npm -v`) within 2.5x
// `node -e 0`; the ratio to runc beside it.
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot, requireTools } from '../lib/preflight.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { exitIfInterrupted, median, pool, printTable, rivalCommands, scratchDir, timeCommands, type Command } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

const flags = {
  runs: { type: 'string', value: 'N', help: 'runs of each command per round (default 10)' },
  rounds: { type: 'string', value: 'N', help: 'rounds (default 3)' },
} as const;

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Benchmark step 04: start-to-exit of a jail running /bin/true, beside unshare, bwrap, runc and node -e 0.', 'node --import tsx bench/04-start.ts [--runs N] [--rounds N]', flags));
    return 0;
  }
  requireRoot('starting jails');
  requireTools('unshare', 'setpriv');
  const [runs, rounds] = [args.flags.runs ?? '10', args.flags.rounds ?? '3'].map(Number) as [number, number];
  if (![runs, rounds].every((n) => Number.isInteger(n) && n > 0)) throw new JailError('--runs and --rounds take a whole number above 0', undefined, 2);

  const runcId = `bench-runc-${process.pid}`; // not "baj…": the tests' leak check would take its cgroup for ours
  let runcState = '';
  // a runc container outlives its runc process only if interrupted; take it down before the dir goes
  const dir = scratchDir(() => runcState && spawnSync('runc', ['--root', runcState, 'delete', '--force', runcId], { stdio: 'ignore' }));
  runcState = join(dir, 'runc-state');
  process.env.JAIL_QUIET = '1';
  console.log(`bench 04-start: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, ${rounds} rounds of ${runs} runs, scratch dir ${dir}`);
  // a rootfs of the bench's own: a test rebuilding the shared one must not swap it under us
  const rootfs = join(dir, 'rootfs');
  await buildBusyboxRootfs(rootfs);

  const commands: Command[] = [
    { name: 'jail: npm run step 4', argv: ['npm', 'run', '--silent', 'step', '4', '--', '--rootfs', rootfs, '--', '/bin/true'] },
    { name: 'npm -v', argv: ['npm', '-v'] },
    { name: 'jail: node bin/step.mjs 4', argv: [process.execPath, 'bin/step.mjs', '4', '--rootfs', rootfs, '--', '/bin/true'] },
  ];
  commands.push(...rivalCommands(rootfs, dir, { id: runcId, state: runcState }));
  commands.push(
    { name: 'node --import tsx -e 0', argv: [process.execPath, '--import', 'tsx', '-e', '0'] },
    { name: 'node -e 0', argv: [process.execPath, '-e', '0'] },
  );

  const rows = new Map<string, number[]>();
  for (let round = 1; round <= rounds; round++) {
    console.log(`\nround ${round} of ${rounds}`);
    pool(rows, timeCommands(commands, runs, { warmup: 2, cwd: repo, scratch: dir }));
    // the same jail, launched from a Node process that is already running
    const loop = spawnSync(process.execPath, ['--import', 'tsx', join(repo, 'bench/launch-loop.ts'), rootfs, String(runs), '2'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    exitIfInterrupted(loop.signal);
    if (loop.status !== 0) throw new JailError(`bench/launch-loop.ts failed (exit ${loop.status})`);
    const t = JSON.parse(loop.stdout) as { jail: number[]; node: number[] };
    pool(rows, new Map([['jail: launchJail() in a warm Node', t.jail], ['node -e 0 (from that Node)', t.node]]));
  }

  const order = ['jail: npm run step 4', 'npm -v', 'jail: node bin/step.mjs 4', 'jail: launchJail() in a warm Node', 'unshare --root', 'bwrap', 'runc run', 'node --import tsx -e 0', 'node -e 0', 'node -e 0 (from that Node)'];
  const sorted = new Map(order.filter((k) => rows.has(k)).map((k) => [k, rows.get(k)!]));
  printTable('step 04, start to exit of /bin/true (wall clock)', sorted, ['node -e 0', ...(rows.has('runc run') ? ['runc run'] : [])]);
  // npm's own start is not the jail's: the aim is measured without it
  const jailOnly = median(rows.get('jail: npm run step 4')!) - median(rows.get('npm -v')!);
  const floor = median(rows.get('node -e 0')!);
  console.log(`\n  npm run step 4 less npm -v: ${jailOnly.toFixed(1)} ms = ${(jailOnly / floor).toFixed(2)} x node -e 0 (aim: within 2.5 x)`);
  console.log(`  load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  return 0;
});
