// node --import tsx bench/01-rootfs.ts [--runs N] [--debian-runs N] [--no-debian]
// How long step 01 takes: the busybox rootfs, and the Debian rootfs once
// debootstrap's result is cached. Each is built into an empty directory and
// rebuilt over an existing one (the atomic swap, then the old tree removed).
// Aims: busybox under 1 s, warm Debian under 5 s on 2 cores.
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { parseArgs, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot } from '../lib/preflight.ts';
import { buildBusyboxRootfs, buildDebianRootfs } from '../steps/01-rootfs/rootfs.ts';
import { printTable, scratchDir, timeCalls, timeCommands } from './measure.ts';

const flags = {
  runs: { type: 'string', value: 'N', help: 'busybox builds per row (default 15)' },
  'debian-runs': { type: 'string', value: 'N', help: 'Debian builds per row (default 5)' },
  'no-debian': { type: 'boolean', help: 'skip Debian (a cold cache means minutes of debootstrap first)' },
} as const;

const count = (v: string | undefined, fallback: number): number => {
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isInteger(n) || n < 1) throw new JailError(`'${v}' is not a number of runs`, 'e.g. --runs 10', 2);
  return n;
};

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Benchmark step 01: build a busybox rootfs, and a Debian one from the debootstrap cache.', 'node --import tsx bench/01-rootfs.ts [--runs N] [--debian-runs N] [--no-debian]', flags));
    return 0;
  }
  requireRoot('building a rootfs');
  const runs = count(args.flags.runs, 15);
  const debianRuns = count(args.flags['debian-runs'], 5);
  process.env.JAIL_QUIET = '1'; // the step's explanations would drown the numbers
  const dir = scratchDir();
  const rows = new Map<string, number[]>();
  console.log(`bench 01-rootfs: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, scratch dir ${dir}`);

  const busybox = join(dir, 'busybox');
  const emptyFirst = (d: string) => () => rmSync(d, { recursive: true, force: true });
  console.log(`busybox: ${runs} builds into an empty dir, ${runs} rebuilds, ${runs} runs of the CLI…`);
  rows.set('busybox, into an empty dir', await timeCalls(() => buildBusyboxRootfs(busybox), runs, { prepare: emptyFirst(busybox) }));
  rows.set('busybox, rebuild (swap, remove old)', await timeCalls(() => buildBusyboxRootfs(busybox), runs));
  // what a learner waits for, less npm's own start: Node, the step's bundle, the build
  const step1 = [process.execPath, 'bin/step.mjs', '1'];
  const cli = timeCommands([
    { name: 'busybox, node bin/step.mjs 1 (rebuild)', argv: [...step1, '--dest', join(dir, 'cli')] },
    { name: 'node bin/step.mjs 1 --help (start-up only)', argv: [...step1, '--help'] },
  ], runs, {
    cwd: new URL('..', import.meta.url).pathname,
    scratch: dir,
  });
  for (const [k, v] of cli) rows.set(k, v);

  if (!args.flags['no-debian']) {
    const debian = join(dir, 'debian');
    console.log('debian: a first build fills the debootstrap cache if it is cold (minutes, needs the mirror)…');
    await buildDebianRootfs(debian);
    console.log(`debian: ${debianRuns} rounds of: a build into an empty dir, a rebuild, a plain cp -a…`);
    // 240 MB a build: flush the last one's dirty pages first (untimed), or
    // each build pays for the writeback of the one before it
    const flushed = (before?: () => void) => () => (before?.(), spawnSync('sync'));
    const copy = join(dir, 'copy');
    const round = [
      ['debian (warm cache), into an empty dir', () => buildDebianRootfs(debian), flushed(emptyFirst(debian))],
      ['debian (warm cache), rebuild', () => buildDebianRootfs(debian), flushed()],
      // the floor under both: copying that many files at all
      ['cp -a of the same tree (the floor)', async () => spawnSync('cp', ['-a', '--reflink=auto', debian, copy]), flushed(emptyFirst(copy))],
    ] as const;
    for (let i = 0; i < debianRuns; i++) {
      for (const [name, fn, prepare] of round) rows.set(name, [...(rows.get(name) ?? []), ...(await timeCalls(fn, 1, { warmup: 0, prepare }))]);
    }
  }
  printTable('step 01, build time (wall clock, in-process unless it says npm run)', rows);
  console.log(`  load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  return 0;
});
