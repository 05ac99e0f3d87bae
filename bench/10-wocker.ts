// node --import tsx bench/10-wocker.ts [--jails N] [--runs N] [--rounds N]
// What a jail costs through the wocker daemon (step 10), side by side in one run:
//   - one creation at a time, warm: POST /jails (busybox, net none, a sleep)
//     to its 201, which the daemon sends once the shim says "running"; where
//     that time goes, from the record's files (their mtimes, seen by inotify)
//     and the start times of the shim's init and of the target;
//   - a /bin/true jail from POST to "exited"; DELETE ?force=1 of a running one;
//   - beside `runc run` of the same busybox rootfs, unshare and bwrap (start
//     to exit of /bin/true), and steps 04 and 09 from the command line (09's
//     jail is the very one the shim runs);
//   - N jails (50) created at once: until all run, p50 and p99 of one
//     creation; RSS and PSS of each jail's processes (shim, unshare, init,
//     target), the host's MemAvailable, the daemon's RSS before, with and after.
// Aim: one creation through the daemon within 2x `runc run`. A JAIL_HOME and a
// daemon socket of the bench's own, in the scratch dir: the learner's jails
// are never seen. Every jail made is stopped and removed and the daemon
// stopped, also on Ctrl-C.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, openSync, readdirSync, readFileSync, rmdirSync, statSync, watch, type FSWatcher } from 'node:fs';
import { request } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot, requireTools } from '../lib/preflight.ts';
import { cmdline, listPids, processStart } from '../lib/proc.ts';
import { jailHome, rootfsDir } from '../lib/state.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { ensureImage } from '../steps/09-layers/store.ts';
import { JAIL_ID } from '../steps/10-wocker/api.ts';
import { daemonSocket } from '../steps/10-wocker/daemon.ts';
import { MAX_CREATING } from '../steps/10-wocker/jails.ts';
import { jailsDir, listIds, readState, recordDir } from '../steps/10-wocker/records.ts';
import { median, pool, printTable, rivalCommands, scratchDir, timeCommands, type Command } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

const flags = {
  jails: { type: 'string', value: 'N', help: 'jails created at once (default 50)' },
  runs: { type: 'string', value: 'N', help: 'runs of each measurement per round (default 10)' },
  rounds: { type: 'string', value: 'N', help: 'rounds (default 3)' },
} as const;

const SLEEPER = { image: 'busybox', net: 'none', cmd: ['sleep', '1000'] };
const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
/** Nearest rank: of 50 samples, p99 is the slowest. */
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(p * xs.length) - 1)]!;
const tryOr = <T>(f: () => T, or: T): T => {
  try {
    return f();
  } catch {
    return or;
  }
};

// --- /proc: a line of /proc/PID/status, Pss of smaps_rollup, MemAvailable

const statusText = (pid: number, field: string) => tryOr(() => new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1], undefined);
/** "VmRSS:  51200 kB" -> 51200; undefined once the process is gone. */
const statusKiB = (pid: number, field: string) => {
  const v = statusText(pid, field);
  return v === undefined ? undefined : parseInt(v, 10);
};
const pssKiB = (pid: number) => tryOr(() => Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0), 0);
const memAvailableKiB = () => Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
/** Gone, or a zombie not reaped yet (a synchronous wait does not let Node reap its children). */
const gone = (pid: number) => (statusText(pid, 'State') ?? 'Z').startsWith('Z');

/** Every process's children, from the PPid lines of /proc/PID/status. */
function childrenMap(): Map<number, number[]> {
  const kids = new Map<number, number[]>();
  for (const pid of listPids()) {
    const ppid = statusKiB(pid, 'PPid');
    if (ppid !== undefined) kids.set(ppid, [...(kids.get(ppid) ?? []), pid]);
  }
  return kids;
}
function descendants(root: number, kids: Map<number, number[]>): number[] {
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]!) ?? []));
  return out;
}

// --- the daemon and its API

let daemon: ChildProcess | undefined;

/**
 * One request on the daemon's socket, a new connection each (agent: false, as
 * curl and the wocker client make them): a kept-alive one that the daemon
 * closed after 5 s idle, while spawnSync blocked our loop, fails with EPIPE.
 */
function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers = text ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {};
    const req = request({ socketPath: daemonSocket(), method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: tryOr(() => JSON.parse(Buffer.concat(chunks).toString('utf8')), undefined) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** `node bin/step.mjs 10` in our process group (a Ctrl-C stops it; its jails stay for undoSync); ms to its first answer. */
async function startDaemon(log: string): Promise<number> {
  const fd = openSync(log, 'a');
  const t0 = performance.now();
  daemon = spawn(process.execPath, ['bin/step.mjs', '10'], { cwd: repo, env: { ...process.env, JAIL_QUIET: '0' }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  while ((await api('GET', '/_ping').catch(() => ({ status: 0 }))).status !== 200) {
    if (daemon.exitCode !== null) throw new JailError(`the daemon exited (${daemon.exitCode}): ${readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' / ')}`);
    if (performance.now() - t0 > 60_000) throw new JailError('the daemon did not answer within 60 s');
    await sleep(20);
  }
  return performance.now() - t0;
}

async function stopDaemon(): Promise<void> {
  const d = daemon;
  if (!d || d.exitCode !== null || d.signalCode !== null) return;
  const closed = new Promise((r) => d.once('close', r));
  d.kill('SIGTERM');
  await closed;
}

async function removeJail(id: string): Promise<void> {
  const r = await api('DELETE', `/jails/${id}?force=1`);
  if (r.status !== 200) throw new JailError(`DELETE /jails/${id}?force=1 answered ${r.status}: ${r.json?.error ?? ''}`);
}

/**
 * On any exit (Ctrl-C too), before the scratch dir goes: no daemon, no shim
 * of ours. Synchronous, as 'exit' listeners are: the daemon first (it starts
 * no more shims), then SIGTERM to every shim, whose launcher stops its jail
 * and unwinds; SIGKILL after 30 s, and then their cgroups by hand.
 */
function undoSync(): void {
  const kill = (pid: number, sig: NodeJS.Signals) => tryOr(() => process.kill(pid, sig), false);
  if (daemon?.pid && !gone(daemon.pid)) {
    kill(daemon.pid, 'SIGTERM');
    for (let i = 0; i < 250 && !gone(daemon.pid); i++) sleepSync(20);
    if (!gone(daemon.pid)) kill(daemon.pid, 'SIGKILL');
  }
  const ids = new Set(listIds());
  // a shim is found by its state file, or by its argv (node …shim….mjs ID) if it has not written one yet
  const shims = new Set(listPids().filter((pid) => {
    const argv = cmdline(pid) ?? [];
    return argv.length === 3 && ids.has(argv[2]!) && argv[1]!.includes('shim');
  }));
  for (const s of [...ids].map(readState)) if (s && processStart(s.shimPid) === s.shimStart) shims.add(s.shimPid);
  const alive = () => [...shims].filter((p) => !gone(p));
  if (!alive().length) return;
  process.stderr.write(`stopping ${alive().length} jail(s) the bench made\n`);
  alive().forEach((p) => kill(p, 'SIGTERM'));
  for (let i = 0; i < 300 && alive().length; i++) sleepSync(100);
  if (!alive().length) return;
  alive().forEach((p) => kill(p, 'SIGKILL')); // the jails die with them (pdeathsig); their files go with the scratch dir
  sleepSync(500);
  for (const root of ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((c) => join('/sys/fs/cgroup', c))]) {
    for (const leaf of [...ids].map((id) => join(root, 'build-a-jail', `w${id}`))) {
      if (existsSync(leaf) && !tryOr(() => (rmdirSync(leaf), true), false)) process.stderr.write(`could not remove ${leaf}; npm run clean will\n`);
    }
  }
}

// --- one creation, and where its time goes

const seen = new Map<string, { states: Map<string, number>; watcher?: FSWatcher }>();
/** A file's mtime on performance.now()'s scale (the wall clock's offset taken now: the two drift apart): when it was written, not when inotify told us (~5 ms later). */
const writtenAt = (path: string) => statSync(path).mtimeMs - (Date.now() - performance.now());

/** inotify on the records: when each jail's shim writes "starting" and "running" to its state.json. */
function watchRecords(): FSWatcher {
  const w = watch(jailsDir(), (_event, name) => {
    if (typeof name !== 'string' || !JAIL_ID.test(name) || seen.has(name)) return;
    const rec = { states: new Map<string, number>(), watcher: undefined as FSWatcher | undefined };
    seen.set(name, rec);
    rec.watcher = tryOr(() => watch(recordDir(name), (_e, file) => {
      if (file !== 'state.json') return;
      const status = readState(name)?.status;
      const at = tryOr(() => Math.min(performance.now(), writtenAt(join(recordDir(name), file))), performance.now());
      if (status && !rec.states.has(status)) rec.states.set(status, at);
    }), undefined);
    rec.watcher?.on('error', () => {});
  });
  w.on('error', () => {});
  return w;
}
const forget = (id: string) => (seen.get(id)?.watcher?.close(), seen.delete(id));

/** Start times in /proc count clock ticks since boot, like performance.now()'s monotonic clock: on its scale, mid-tick. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;
const monoOffset = Number(process.hrtime.bigint()) / 1e6 - performance.now();
const startedAt = (pid: number | undefined) => {
  const t = pid === undefined ? undefined : processStart(pid);
  return t === undefined ? undefined : ((t + 0.5) * 1000) / CLK_TCK - monoOffset;
};

const PHASES = [
  'request sent -> record made (daemon: parse, check, a slot; ms clocks: about 0)',
  'record -> shim up, "starting" (spawn, Node start, the shim bundle)',
  'shim up -> init forked (launcher: cgroup, overlay dirs, unshare) [tick]',
  'init forked -> "running" (init Node start, id maps, idmap helper, lo up, "go") [tick]',
  '"running" -> 201 received (the daemon looks every 10 ms)',
  '"running" -> target forked (the init mounts, pivots, locks, spawns) [tick]',
];
const phases = new Map<string, number[]>(PHASES.map((p) => [p, []]));

/** POST /jails of a sleeper, alone: ms to its 201; its phases on the side. */
async function createOne(): Promise<{ id: string; ms: number }> {
  const sent = performance.now();
  const r = await api('POST', '/jails', SLEEPER);
  const answered = performance.now();
  if (r.status !== 201) throw new JailError(`POST /jails answered ${r.status}: ${r.json?.error ?? ''}`);
  const id: string = r.json.id;
  const s = readState(id);
  // "running" is written when the init is told to go: the target may not run yet at the 201
  let target: number | undefined;
  for (let i = 0; i < 100 && s?.initPid && !target; i++) {
    target = childrenMap().get(s.initPid)?.[0];
    if (!target) await sleep(10);
  }
  const [starting, running] = [seen.get(id)?.states.get('starting'), seen.get(id)?.states.get('running')];
  const [initFork, targetFork] = [startedAt(s?.initPid), startedAt(target)];
  const record = writtenAt(join(recordDir(id), 'request.json'));
  if (starting && running && initFork !== undefined && targetFork !== undefined) {
    const values = [record - sent, starting - record, initFork - starting, running - initFork, answered - running, targetFork - running];
    values.forEach((v, i) => phases.get(PHASES[i]!)!.push(v));
  }
  forget(id);
  return { id, ms: answered - sent };
}

/** A /bin/true jail, as `wocker run --rm busybox -- /bin/true` would: POST, GET every 5 ms until exited. */
async function runTrue(): Promise<number> {
  const t0 = performance.now();
  const r = await api('POST', '/jails', { ...SLEEPER, cmd: ['/bin/true'] });
  if (r.status !== 201) throw new JailError(`POST /jails (true) answered ${r.status}: ${r.json?.error ?? ''}`);
  let v: any;
  while ((v = (await api('GET', `/jails/${r.json.id}`)).json)?.state !== 'exited') await sleep(5);
  const ms = performance.now() - t0;
  if (v.exitCode !== 0) throw new JailError(`the /bin/true jail exited ${v.exitCode}: ${v.error ?? ''}`);
  await removeJail(r.json.id);
  forget(r.json.id);
  return ms;
}

/** Each jail's processes: its shim and everything under it (unshare, the init, the target), RSS and PSS by kind. */
function jailMemory(ids: string[]): Map<string, { rss: number; pss: number; anon: number; n: number }> {
  const kids = childrenMap();
  const byKind = new Map<string, { rss: number; pss: number; anon: number; n: number }>();
  for (const s of ids.map(readState)) {
    for (const pid of s ? descendants(s.shimPid, kids) : []) {
      const kind = pid === s!.shimPid ? 'shim (node)' : pid === s!.initPid ? 'init (node, PID 1)' : (statusText(pid, 'Name') ?? '?');
      const k = byKind.get(kind) ?? { rss: 0, pss: 0, anon: 0, n: 0 };
      byKind.set(kind, { rss: k.rss + (statusKiB(pid, 'VmRSS') ?? 0), pss: k.pss + pssKiB(pid), anon: k.anon + (statusKiB(pid, 'RssAnon') ?? 0), n: k.n + 1 });
    }
  }
  return byKind;
}

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Benchmark step 10: jails made through the wocker daemon, one at a time and N at once, beside runc run and steps 04 and 09.', 'node --import tsx bench/10-wocker.ts [--jails N] [--runs N] [--rounds N]', flags));
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
  const daemonLog = join(dir, 'daemon.log');
  const daemonStart = await startDaemon(daemonLog);
  const pid = daemon!.pid!;
  const rssIdle = statusKiB(pid, 'VmRSS')!;
  await removeJail((await createOne()).id); // warm-up: bundles checked, the page cache full; its phases are not kept
  for (const p of phases.values()) p.length = 0;
  const watcher = watchRecords();

  const [CREATE, TRUE, DELETE] = ['daemon: one creation, warm (POST -> 201)', 'daemon: /bin/true, POST -> "exited"', 'daemon: DELETE ?force=1 of a running jail'];
  const rows = new Map<string, number[]>();
  for (let round = 1; round <= rounds; round++) {
    console.log(`\nround ${round} of ${rounds}`);
    pool(rows, timeCommands(commands, runs, { warmup: 2, cwd: repo, scratch: dir }));
    const [created, deleted, trues]: number[][] = [[], [], []];
    for (let i = 0; i < runs; i++) {
      const { id, ms } = await createOne();
      created.push(ms);
      const t0 = performance.now();
      await removeJail(id);
      deleted.push(performance.now() - t0);
      trues.push(await runTrue());
    }
    pool(rows, new Map([[CREATE, created], [TRUE, trues], [DELETE, deleted]]));
    console.log(`  through the daemon: ${runs} creations, median ${fmt(median(created))}; /bin/true to exited, median ${fmt(median(trues))}`);
  }
  watcher.close();

  console.log(`\n${jails} jails at once (the daemon starts at most ${MAX_CREATING} at a time; the others wait their turn)`);
  const [rssBefore, availBefore] = [statusKiB(pid, 'VmRSS')!, memAvailableKiB()];
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: jails }, async () => {
      const sent = performance.now();
      const r = await api('POST', '/jails', SLEEPER).catch((err: Error) => ({ status: 0, json: { error: err.message } }));
      const end = performance.now();
      return { status: r.status, id: r.json?.id as string | undefined, error: r.json?.error as string | undefined, sent, end };
    }),
  );
  const ok = results.filter((r) => r.status === 201);
  const allRunning = Math.max(...ok.map((r) => r.end)) - t0;
  // a request waits for a creation slot before its record is made (request.json)
  const made = ok.map((r) => tryOr(() => writtenAt(join(recordDir(r.id!), 'request.json')), r.sent));
  const runningNow = (((await api('GET', '/jails')).json ?? []) as { state: string }[]).filter((j) => j.state === 'running').length;
  await sleep(1000); // the targets run, Node's heaps settle
  const [rssWith, availWith, memory] = [statusKiB(pid, 'VmRSS')!, memAvailableKiB(), jailMemory(ok.map((r) => r.id!))];
  const t1 = performance.now();
  const removed = await Promise.all(listIds().map((id) => removeJail(id).then(() => '', (err: Error) => err.message)));
  const allRemoved = performance.now() - t1;
  const left = listIds().length;
  await sleep(1000);
  const [rssAfter, hwm] = [statusKiB(pid, 'VmRSS')!, statusKiB(pid, 'VmHWM')!];
  await stopDaemon();

  const creations = ok.map((r) => r.end - r.sent);
  if (ok.length) {
    pool(rows, new Map([
      [`${jails} at once: one creation (POST -> 201)`, creations],
      [`${jails} at once: its wait for a creation slot`, ok.map((r, i) => made[i]! - r.sent)],
      [`${jails} at once: its own start (record -> 201)`, ok.map((r, i) => r.end - made[i]!)],
      [`${jails} at once: all running (first POST -> last 201)`, [allRunning]],
      [`${jails} at once: all removed (DELETE ?force=1 each, at once)`, [allRemoved]],
    ]));
  }
  printTable('step 10, one jail through the daemon beside the tools (wall clock; rivals and steps: start to exit of /bin/true)', rows, ['runc run']);
  const cut = Math.max(...PHASES.map((p) => p.length));
  console.log(`\nwhere one warm creation's ${fmt(median(rows.get(CREATE)!))} goes (medians of ${phases.get(PHASES[0]!)!.length}; [tick]: a /proc start time, 10 ms steps)`);
  for (const [p, xs] of phases) console.log(`  ${p.padEnd(cut)}  ${xs.length ? fmt(median(xs)).padStart(7) : '      -'}`);

  const fails = results.filter((r) => r.status !== 201);
  const failedRemovals = removed.filter(Boolean);
  console.log(`\n${jails} at once: ${ok.length} answered 201${fails.length ? `, ${fails.length} did not: ${[...new Set(fails.map((f) => `${f.status} ${f.error}`))].slice(0, 3).join('; ')}` : ''}; ${runningNow} listed running after the last 201`);
  if (ok.length) console.log(`  one creation: p50 ${fmt(percentile(creations, 0.5))}, p99 ${fmt(percentile(creations, 0.99))} (nearest rank: the slowest of ${ok.length}); all running after ${fmt(allRunning)}, ${fmt(allRunning / ok.length)} a jail`);
  console.log(`  removed: ${removed.length - failedRemovals.length} of ${removed.length} in ${fmt(allRemoved)}${failedRemovals.length ? ` (failed: ${failedRemovals.slice(0, 2).join('; ')})` : ''}; records left: ${left}`);

  console.log(`\nmemory with ${ok.length} jails running, each (RSS counts shared pages in every process, PSS shares them out, RssAnon is the process's own heap)`);
  const sum = { rss: 0, pss: 0, anon: 0 };
  for (const [kind, m] of [...memory].sort((a, b) => b[1].rss - a[1].rss)) {
    for (const k of ['rss', 'pss', 'anon'] as const) sum[k] += m[k];
    console.log(`  ${kind.padEnd(20)} ${String(m.n).padStart(4)} processes  RSS ${mib(m.rss / m.n).padStart(9)}  PSS ${mib(m.pss / m.n).padStart(9)}  RssAnon ${mib(m.anon / m.n).padStart(9)}`);
  }
  const per = Math.max(1, ok.length);
  console.log(`  per jail: RSS ${mib(sum.rss / per)}, PSS ${mib(sum.pss / per)}, RssAnon ${mib(sum.anon / per)}; the host's MemAvailable dropped ${mib((availBefore - availWith) / per)} a jail`);
  console.log(`  daemon (pid ${pid}) VmRSS: ${mib(rssIdle)} at start, ${mib(rssBefore)} before the ${jails}, ${mib(rssWith)} with them, ${mib(rssAfter)} after; peak (VmHWM) ${mib(hwm)}`);
  console.log(`  the daemon answered its first /_ping ${fmt(daemonStart)} after its start`);

  const [mine, runc] = [median(rows.get(CREATE)!), median(rows.get('runc run')!)];
  console.log(`\n  aim: one creation through the daemon within 2x runc run: ${(mine / runc).toFixed(2)} x (${fmt(mine)} against ${fmt(runc)}): ${mine / runc <= 2 ? 'met' : 'NOT met'}`);
  console.log(`  load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}; the bench took ${fmt(performance.now() - wall0)}`);
  if (fails.length || failedRemovals.length || left) {
    console.log(`\nthe daemon's log, its last lines:\n${readFileSync(daemonLog, 'utf8').trimEnd().split('\n').slice(-15).join('\n')}`);
    throw new JailError('some jails failed to start or to be removed: see above');
  }
  return 0;
});
