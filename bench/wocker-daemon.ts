// The wocker daemon as bench/10-wocker.ts drives it: started as `npm run
// step 10` starts it (WOCKER_POOL from the bench), one request per
// connection on its socket, its pool watched through GET /info, stopped
// with SIGTERM (it waits for its idle slots to undo themselves). And
// undoSync, the bench's way out, Ctrl-C included: no daemon, no shim, no
// idle slot, no cgroup and no mount of the bench's own are left behind.
// Only the bench's: its JAIL_HOME and socket are its own, and a shim is
// taken for ours only if its record or its slot's log is in that home.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { JailError } from '../lib/errors.ts';
import { listPids, processStart } from '../lib/proc.ts';
import { jailHome, PREFIX } from '../lib/state.ts';
import { cgroupPaths } from '../steps/06-cgroups/hierarchy.ts';
import { JAIL_ID } from '../steps/10-wocker/api.ts';
import { daemonSocket } from '../steps/10-wocker/daemon.ts';
import { idleSlotPids, poolDir } from '../steps/10-wocker/pool.ts';
import { listIds, readState } from '../steps/10-wocker/records.ts';
import { jailName } from '../steps/10-wocker/request.ts';
import { gone, shimArgv, sleep, sleepSync, tryOr } from './wocker-probe.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
let daemon: ChildProcess | undefined;
export const daemonPid = (): number => daemon?.pid ?? 0;

/**
 * One request on the daemon's socket, a new connection each (agent: false, as
 * curl and the wocker client make them): a kept-alive one that the daemon
 * closed after 5 s idle, while spawnSync blocked our loop, fails with EPIPE.
 */
export function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
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

export const logTail = (log: string, n: number) => tryOr(() => readFileSync(log, 'utf8').trimEnd().split('\n').slice(-n).join('\n'), '');

/**
 * `node bin/step.mjs 10` with `env` over ours, in our process group (a
 * Ctrl-C at the terminal stops it too; its jails stay for undoSync); ms to
 * its first answer.
 */
export async function startDaemon(log: string, env: NodeJS.ProcessEnv): Promise<number> {
  const fd = openSync(log, 'a');
  const t0 = performance.now();
  const d = spawn(process.execPath, ['bin/step.mjs', '10'], { cwd: repo, env: { ...process.env, JAIL_QUIET: '0', ...env }, stdio: ['ignore', fd, fd] });
  daemon = d;
  closeSync(fd);
  while ((await api('GET', '/_ping').catch(() => ({ status: 0 }))).status !== 200) {
    if (d.exitCode !== null) throw new JailError(`the daemon exited (${d.exitCode}): ${logTail(log, 3).split('\n').join(' / ')}`);
    if (performance.now() - t0 > 60_000) throw new JailError('the daemon did not answer within 60 s');
    await sleep(20);
  }
  return performance.now() - t0;
}

/**
 * SIGTERM, and its end: the daemon closes each idle slot's channel and waits
 * (10 s at most) for the slot to kill its init and remove its cgroup. A slot
 * still there after the daemon's end is its bug: said, and left to undoSync.
 */
export async function stopDaemon(): Promise<void> {
  const d = daemon;
  if (!d || d.exitCode !== null || d.signalCode !== null) return;
  const closed = new Promise((r) => d.once('close', r));
  d.kill('SIGTERM');
  await closed;
  for (let i = 0; i < 50 && idleSlotPids().length; i++) await sleep(100);
  const left = idleSlotPids();
  if (left.length) throw new JailError(`${left.length} idle pool slot(s) outlived the daemon that stopped with SIGTERM: pids ${left.join(' ')}`, 'the daemon should wait for them (pool.ts close()); the bench stops them on its way out');
}

export async function removeJail(id: string): Promise<void> {
  const r = await api('DELETE', `/jails/${id}?force=1`);
  if (r.status !== 200) throw new JailError(`DELETE /jails/${id}?force=1 answered ${r.status}: ${r.json?.error ?? ''}`);
}

export interface PoolInfo {
  size: number;
  ready: number;
  starting: number;
}

/** Until GET /info says every slot is ready: a creation timed after it finds a full pool, and no slot's Node start beside it. */
export async function waitPoolReady(log: string, ms = 60_000): Promise<PoolInfo> {
  const t0 = performance.now();
  for (;;) {
    const info: PoolInfo | undefined = (await api('GET', '/info')).json?.pool;
    if (info && info.ready === info.size) return info;
    if (performance.now() - t0 > ms) throw new JailError(`the pool was not ready within ${ms / 1000} s: ${JSON.stringify(info)}`, `the daemon's log: ${log}\n${logTail(log, 5)}`);
    await sleep(20);
  }
}

/** Mount points under `dir` in our mount namespace, deepest first (mountinfo's field 5; a space is written \040). */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => unescape(l.split(' ')[4] ?? ''));
  return points.filter((p) => p.startsWith(dir + '/')).sort((a, b) => b.length - a.length);
}

/**
 * On any exit (Ctrl-C too), before the scratch dir goes. Synchronous, as
 * 'exit' listeners are. The daemon first: it starts no more shims, and its
 * SIGTERM undoes its idle slots (each closes with its channel). Then
 * SIGTERM to every shim of ours: a jail's launcher stops the jail and
 * unwinds; a slot left idle undoes itself too. SIGKILL after 30 s, and
 * then their cgroups and mounts by hand.
 */
export function undoSync(): void {
  const kill = (pid: number, sig: NodeJS.Signals) => tryOr(() => process.kill(pid, sig), false);
  const pid = daemonPid();
  if (pid && !gone(pid)) {
    kill(pid, 'SIGTERM');
    for (let i = 0; i < 750 && !gone(pid); i++) sleepSync(20); // its slots' undo: 10 s at most, all at once
    if (!gone(pid)) kill(pid, 'SIGKILL');
  }
  const ids = new Set([...listIds(), ...tryOr(() => readdirSync(poolDir()), []).map((f) => f.replace(/\.log$/, '')).filter((id) => JAIL_ID.test(id))]);
  // a shim is found by its argv (its record's id, or its slot's log), or by its state file
  const shims = new Map<number, string>();
  for (const p of listPids()) {
    const a = shimArgv(p);
    if (a && (ids.has(a.id) || a.slotLog?.startsWith(poolDir() + '/'))) shims.set(p, a.id);
  }
  for (const id of ids) {
    const s = readState(id);
    if (s && processStart(s.shimPid) === s.shimStart) shims.set(s.shimPid, id);
  }
  for (const id of shims.values()) ids.add(id);
  const alive = () => [...shims.keys()].filter((p) => !gone(p));
  if (alive().length) {
    process.stderr.write(`stopping ${alive().length} shim(s) the bench made (jails, or idle pool slots)\n`);
    alive().forEach((p) => kill(p, 'SIGTERM'));
    for (let i = 0; i < 300 && alive().length; i++) sleepSync(100);
  }
  if (alive().length) {
    alive().forEach((p) => kill(p, 'SIGKILL')); // their inits die with them (pdeathsig); their files go with the scratch dir
    sleepSync(500);
    for (const mount of mountsUnder(jailHome())) spawnSync('umount', ['--lazy', mount], { stdio: 'ignore' });
  }
  // a cgroup outlives a shim killed, or one stopped between making it and noting it: by its name, baj-wID
  for (const id of ids) {
    for (const leaf of tryOr(() => cgroupPaths(`${PREFIX}-${jailName(id)}`), [])) {
      if (!tryOr(() => (rmdirSync(leaf), true), false)) process.stderr.write(`could not remove ${leaf}; npm run clean will\n`);
    }
  }
}
