// node --import tsx bench/10-wocker.ts [--jails N] [--runs N] [--rounds N]
// What a jail costs through the wocker daemon (step 10), side by side in one
// run with `runc run` of the same busybox rootfs. The daemon is started twice:
//   1. with its pool (WOCKER_POOL=2, the default): two slots, each a shim
//      whose init waits in fresh namespaces.
//      - one creation at a time from a full pool: POST /jails (busybox, net
//        none, a sleep) to its 201; each one checked to have come from the
//        pool (its init started before the POST), and where its time goes;
//      - a /bin/true jail from POST to "exited"; DELETE ?force=1 of a running
//        one (the pool full again before each, so no slot starts beside it);
//      - N jails (50) created at once: the two slots serve the first, the rest
//        start cold; until all run, p50 and p99 of one creation; RSS and PSS
//        of each jail's processes, the host's MemAvailable, the daemon's RSS;
//      - the pool full again and idle: RSS and PSS of one idle slot (its shim,
//        unshare, the waiting init, the waiting idmap helper).
//   2. with WOCKER_POOL=0: one creation at a time, cold (a shim's, an init's
//      and a helper's Node starts in the request's time), and where it goes.
// Beside them: unshare and bwrap (start to exit of /bin/true), steps 04 and 09
// from the command line (09's jail is the very one the shim runs), and runc in
// every round of both. Aim: one creation from the pool within 2x `runc run`.
// A JAIL_HOME and a daemon socket of the bench's own, in the scratch dir: the
// learner's jails are never seen. Every jail made is removed, every slot
// undone and the daemon stopped, also on Ctrl-C.
import { spawnSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot, requireTools } from '../lib/preflight.ts';
import { ticksNow } from '../lib/proc.ts';
import { jailHome, rootfsDir } from '../lib/state.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { ensureImage } from '../steps/09-layers/store.ts';
import { MAX_CREATING } from '../steps/10-wocker/jails.ts';
import { idleSlotPids } from '../steps/10-wocker/pool.ts';
import { listIds, readState, recordDir } from '../steps/10-wocker/records.ts';
import { median, pool, printTable, rivalCommands, scratchDir, timeCommands, type Command } from './measure.ts';
import { COLD_PHASES, createOne, POOL_PHASES, runTrue, SLEEPER, watchRecords, writtenAt, type Creation } from './wocker-creation.ts';
import { api, daemonPid, logTail, removeJail, startDaemon, stopDaemon, undoSync, waitPoolReady } from './wocker-daemon.ts';
import { CLK_TCK, jailMemory, memAvailableKiB, mib, printWeights, sleep, slotMemory, startedBefore, statusKiB, tryOr } from './wocker-probe.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

const flags = {
  jails: { type: 'string', value: 'N', help: 'jails created at once (default 50)' },
  runs: { type: 'string', value: 'N', help: 'runs of each measurement per round (default 10)' },
  rounds: { type: 'string', value: 'N', help: 'rounds (default 3)' },
} as const;

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
/** Nearest rank: of 50 samples, p99 is the slowest. */
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(p * xs.length) - 1)]!;
const POOLED = 'daemon: one creation from the pool (POST -> 201)';
const COLD = 'daemon: one creation, cold (WOCKER_POOL=0)';
const TRUE = 'daemon: /bin/true, POST -> "exited"';
const DELETE = 'daemon: DELETE ?force=1 of a running jail';

/** Each phase's median. Its ends come from different clocks (mtimes, ticks, performance.now()): -0.4 ms is 0. */
function printPhases(title: string, labels: string[], samples: number[][]): void {
  console.log(`\nwhere one ${title} goes (medians of ${samples.length}; [tick]: a /proc start time, ${1000 / CLK_TCK} ms steps)`);
  const cut = Math.max(...labels.map((p) => p.length));
  const shown = (xs: number[]) => fmt(Math.abs(median(xs)) < 0.5 ? 0 : median(xs)).padStart(7);
  labels.forEach((p, i) => console.log(`  ${p.padEnd(cut)}  ${samples.length ? shown(samples.map((s) => s[i]!)) : '      -'}`));
}

/** N POSTs at once: each one's time, its wait for a creation slot (until its record), whether a pool slot served it. */
async function createMany(n: number) {
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, async () => {
      const tick = ticksNow();
      const sent = performance.now();
      const r = await api('POST', '/jails', SLEEPER).catch((err: Error) => ({ status: 0, json: { error: err.message } }));
      return { status: r.status, id: r.json?.id as string | undefined, error: r.json?.error as string | undefined, tick, sent, end: performance.now() };
    }),
  );
  const ok = results.filter((r) => r.status === 201).map((r) => ({ ...r, id: r.id! }));
  return {
    ok,
    fails: results.filter((r) => r.status !== 201),
    allRunning: Math.max(...ok.map((r) => r.end)) - t0,
    // a request waits for a creation slot before its record is made (request.json)
    made: ok.map((r) => tryOr(() => writtenAt(join(recordDir(r.id), 'request.json')), r.sent)),
    pooled: ok.filter((r) => startedBefore(readState(r.id)?.initPid, r.tick)).length,
  };
}

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Benchmark step 10: jails made through the wocker daemon, from its pool and cold, one at a time and N at once, beside runc run and steps 04 and 09.', 'node --import tsx bench/10-wocker.ts [--jails N] [--runs N] [--rounds N]', flags));
    return 0;
  }
  requireRoot('starting jails');
  requireTools('unshare', 'setpriv', 'nsenter', 'runc');
  const [jails, runs, rounds] = [args.flags.jails ?? '50', args.flags.runs ?? '10', args.flags.rounds ?? '3'].map(Number) as [number, number, number];
  if (![jails, runs, rounds].every((n) => Number.isInteger(n) && n > 0)) throw new JailError('--jails, --runs and --rounds take a whole number above 0', undefined, 2);

  const runcId = `bench-runc-${process.pid}`; // not "baj…": the tests' leak check would take its cgroup for ours
  let runcState = '';
  const dir = scratchDir(() => {
    undoSync();
    if (runcState) spawnSync('runc', ['--root', runcState, 'delete', '--force', runcId], { stdio: 'ignore' });
  });
  runcState = join(dir, 'runc-state');
  chmodSync(dir, 0o755); // the jail's root walks through it to the layers
  process.env.JAIL_HOME = join(dir, 'home');
  process.env.WOCKER_SOCK = join(dir, 'wocker.sock');
  process.env.JAIL_QUIET = '1';
  const wall0 = performance.now();
  console.log(`bench 10-wocker: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, ${rounds} rounds of ${runs} runs, ${jails} jails at once, JAIL_HOME ${jailHome()}`);
  // bash with a socket for stdin (Node's pipes) and SHLVL unset or 0 takes itself for sshd's: it reads ~/.bashrc
  if (!(Number(process.env.SHLVL) >= 1)) console.log("note: SHLVL is unset or 0 here: each zx command of a jail's start (bash -c) reads root's ~/.bashrc first");
  const rootfs = rootfsDir('busybox');
  await buildBusyboxRootfs(rootfs);
  await ensureImage('busybox'); // its layer made here, not by the first shims at once

  const commands: Command[] = [
    ...rivalCommands(rootfs, dir, { id: runcId, state: runcState }),
    { name: 'step 4: node bin/step.mjs 4 (pivot_root, no locks)', argv: [process.execPath, 'bin/step.mjs', '4', '--rootfs', rootfs, '--', '/bin/true'] },
    { name: "step 9: node bin/step.mjs 9 --image busybox (the shim's jail)", argv: [process.execPath, 'bin/step.mjs', '9', '--image', 'busybox', '--', '/bin/true'] },
  ];
  const runc = commands.filter((c) => c.name === 'runc run'); // beside the cold rounds too: the same load for both ratios
  const rows = new Map<string, number[]>(); // the rivals' and steps' rows
  const mine = new Map<string, number[]>([[POOLED, []], [COLD, []], [TRUE, []], [DELETE, []]]);
  const phases: Record<'pooled' | 'cold', number[][]> = { pooled: [], cold: [] };
  // a creation's row is where it came from, checked: its init started before its POST, or after it
  const astray = { pooled: 0, cold: 0 };
  const keep = (c: Creation, row: typeof POOLED | typeof COLD) => {
    const series = row === POOLED ? 'pooled' : 'cold';
    if (c.pooled !== (series === 'pooled')) return void astray[series]++; // left out of the row, and said
    mine.get(row)!.push(c.ms);
    if (c.phases) phases[series].push(c.phases);
  };

  // --- 1. the daemon with its pool
  const poolLog = join(dir, 'daemon-pool.log');
  const poolStart = await startDaemon(poolLog, { WOCKER_POOL: '2' });
  const pid = daemonPid();
  const { size } = await waitPoolReady(poolLog);
  const rssIdle = statusKiB(pid, 'VmRSS')!;
  await removeJail((await createOne()).id); // warm-up: bundles checked, the page cache full; not kept
  let watcher = watchRecords();
  for (let round = 1; round <= rounds; round++) {
    console.log(`\nround ${round} of ${rounds}, the daemon with a pool of ${size}`);
    await waitPoolReady(poolLog); // no slot starting beside the rivals
    pool(rows, timeCommands(commands, runs, { warmup: 2, cwd: repo, scratch: dir }));
    for (let i = 0; i < runs; i++) {
      await waitPoolReady(poolLog);
      const c = await createOne();
      keep(c, POOLED);
      await waitPoolReady(poolLog); // the slot it took is made again first: its three Node starts stay out of the DELETE
      const t0 = performance.now();
      await removeJail(c.id);
      mine.get(DELETE)!.push(performance.now() - t0);
      await waitPoolReady(poolLog);
      mine.get(TRUE)!.push(await runTrue());
    }
    console.log(`  through the daemon: ${runs} creations from the pool, median ${fmt(median(mine.get(POOLED)!))}; /bin/true to exited, median ${fmt(median(mine.get(TRUE)!))}`);
  }
  watcher.close();
  const pooledRuns = runs * rounds;

  await waitPoolReady(poolLog);
  console.log(`\n${jails} jails at once (the pool's ${size} slots serve the first; the daemon starts at most ${MAX_CREATING} at a time, the others wait their turn)`);
  const [rssBefore, availBefore] = [statusKiB(pid, 'VmRSS')!, memAvailableKiB()];
  const many = await createMany(jails);
  const runningNow = (((await api('GET', '/jails')).json ?? []) as { state: string }[]).filter((j) => j.state === 'running').length;
  // the pool refills (its slots served the first): full again, the jails alone make the difference from before
  await waitPoolReady(poolLog);
  await sleep(1000); // the targets run, Node's heaps settle
  const [rssWith, availWith] = [statusKiB(pid, 'VmRSS')!, memAvailableKiB()];
  const memory = jailMemory(many.ok.flatMap((r) => readState(r.id) ?? []));
  const t1 = performance.now();
  const removed = await Promise.all(listIds().map((id) => removeJail(id).then(() => '', (err: Error) => err.message)));
  const allRemoved = performance.now() - t1;
  const left = listIds().length;
  // no slot was taken by a removal: the pool is full and idle, and what an idle slot holds is measured
  await waitPoolReady(poolLog);
  const slots = idleSlotPids();
  const slotWeights = slotMemory(slots);
  const [rssAfter, hwm] = [statusKiB(pid, 'VmRSS')!, statusKiB(pid, 'VmHWM')!];
  await stopDaemon(); // SIGTERM: it waits for its idle slots to undo themselves

  // --- 2. the daemon without a pool: every jail starts cold
  const coldLog = join(dir, 'daemon-cold.log');
  const coldStart = await startDaemon(coldLog, { WOCKER_POOL: '0' });
  await removeJail((await createOne()).id); // warm-up, not kept
  watcher = watchRecords();
  for (let round = 1; round <= rounds; round++) {
    console.log(`\nround ${round} of ${rounds}, the daemon with WOCKER_POOL=0`);
    pool(rows, timeCommands(runc, runs, { warmup: 2, cwd: repo, scratch: dir }));
    for (let i = 0; i < runs; i++) {
      const c = await createOne();
      keep(c, COLD);
      await removeJail(c.id);
    }
    console.log(`  through the daemon: ${runs} creations, cold, median ${fmt(median(mine.get(COLD)!))}`);
  }
  watcher.close();
  await stopDaemon();

  const { ok, fails } = many;
  const creations = ok.map((r) => r.end - r.sent);
  for (const [k, v] of mine) if (v.length) rows.set(k, v);
  if (ok.length) {
    pool(rows, new Map([
      [`${jails} at once: one creation (POST -> 201)`, creations],
      [`${jails} at once: its wait for a creation slot`, ok.map((r, i) => many.made[i]! - r.sent)],
      [`${jails} at once: its own start (record -> 201)`, ok.map((r, i) => r.end - many.made[i]!)],
      [`${jails} at once: all running (first POST -> last 201)`, [many.allRunning]],
      [`${jails} at once: all removed (DELETE ?force=1 each, at once)`, [allRemoved]],
    ]));
  }
  printTable('step 10, one jail through the daemon beside the tools (wall clock; rivals and steps: start to exit of /bin/true)', rows, ['runc run']);
  console.log(`\nfrom the pool: ${pooledRuns - astray.pooled} of the ${pooledRuns} creations with a full pool had their init started before their POST${astray.pooled ? ` (NOT all: ${astray.pooled} started cold, left out of the row)` : ': all'}`);
  if (astray.cold) console.log(`  and ${astray.cold} of the cold series had an init older than its POST (from a pool?): left out of its row`);
  printPhases('creation from the pool', POOL_PHASES, phases.pooled);
  printPhases('cold creation', COLD_PHASES, phases.cold);

  const failedRemovals = removed.filter(Boolean);
  console.log(`\n${jails} at once: ${ok.length} answered 201${fails.length ? `, ${fails.length} did not: ${[...new Set(fails.map((f) => `${f.status} ${f.error}`))].slice(0, 3).join('; ')}` : ''}; ${many.pooled} of them from the pool (of ${size} slots), the rest cold; ${runningNow} listed running after the last 201`);
  if (ok.length) console.log(`  one creation: p50 ${fmt(percentile(creations, 0.5))}, p99 ${fmt(percentile(creations, 0.99))} (nearest rank: the slowest of ${ok.length}); all running after ${fmt(many.allRunning)}, ${fmt(many.allRunning / ok.length)} a jail`);
  console.log(`  removed: ${removed.length - failedRemovals.length} of ${removed.length} in ${fmt(allRemoved)}${failedRemovals.length ? ` (failed: ${failedRemovals.slice(0, 2).join('; ')})` : ''}; records left: ${left}`);

  console.log(`\nmemory with ${ok.length} jails running, each (RSS counts shared pages in every process, PSS shares them out, RssAnon is the process's own heap)`);
  printWeights(memory, ok.length, 'jail');
  console.log(`  the host's MemAvailable dropped ${mib((availBefore - availWith) / Math.max(1, ok.length))} a jail`);
  console.log(`\nmemory of the pool, full and idle: ${slots.length} slot(s), each`);
  printWeights(slotWeights, slots.length, 'idle slot');
  console.log(`\n  daemon (pid ${pid}, with the pool) VmRSS: ${mib(rssIdle)} at start, ${mib(rssBefore)} before the ${jails}, ${mib(rssWith)} with them, ${mib(rssAfter)} after; peak (VmHWM) ${mib(hwm)}`);
  console.log(`  the daemons answered their first /_ping ${fmt(poolStart)} (with the pool) and ${fmt(coldStart)} (WOCKER_POOL=0) after their start`);

  const runcMs = median(rows.get('runc run')!);
  const [pooledMs, coldMs] = [median(mine.get(POOLED)!), median(mine.get(COLD)!)];
  const ratio = (ms: number) => (Number.isFinite(ms) ? `${(ms / runcMs).toFixed(2)} x (${fmt(ms)} against ${fmt(runcMs)})` : 'no creation to compare');
  console.log(`\n  aim: one creation through the daemon (from the pool) within 2x runc run: ${ratio(pooledMs)}: ${pooledMs / runcMs <= 2 ? 'met' : 'NOT met'}`);
  console.log(`  cold (WOCKER_POOL=0): ${ratio(coldMs)}`);
  console.log(`  load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}; the bench took ${fmt(performance.now() - wall0)}`);
  if (fails.length || failedRemovals.length || left) {
    console.log(`\nthe daemon's log (with the pool), its last lines:\n${logTail(poolLog, 15)}`);
    throw new JailError('some jails failed to start or to be removed: see above');
  }
  return 0;
});
