// npm run clean, step 10's part: shims still running (their jails with
// them), every jail's record, running or exited (clean means clean), the
// pool's idle slots (each undoes its init and its cgroup on SIGTERM) and
// their logs, and a daemon's socket that nobody answers on. A shim gets SIGTERM first, so its
// launcher unwinds the network, the cgroup and the overlay itself; SIGKILL
// only if it does not end. Runs before no other step's cleaner needs it:
// steps 05-09's cleaners then find nothing of these jails left.
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { cmdline, listPids } from '../../lib/proc.ts';
import { listDir } from '../../lib/state.ts';
import { jailsDir, listIds, readState, recordDir, removeRecord, shimAlive } from './records.ts';
import { daemonSocket } from './daemon.ts';
import { poolDir } from './pool.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stopShims(ids: string[]): Promise<string[]> {
  const alive = ids.filter((id) => shimAlive(readState(id)));
  for (const id of alive) {
    try {
      process.kill(readState(id)!.shimPid, 'SIGTERM');
    } catch {}
  }
  const deadline = Date.now() + 10_000;
  while (alive.some((id) => shimAlive(readState(id))) && Date.now() < deadline) await sleep(100);
  for (const id of alive.filter((i) => shimAlive(readState(i)))) {
    try {
      process.kill(readState(id)!.shimPid, 'SIGKILL');
    } catch {}
  }
  return alive.map((id) => `shim of jail ${id}`);
}

const nobodyAnswers = (path: string) =>
  new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });

/** Idle pool slots: `node …shim… --pool LOG ID` processes whose ID no record has (a taken slot is a jail's shim). */
const slotPids = () =>
  listPids().filter((pid) => {
    const argv = cmdline(pid) ?? [];
    const at = argv.indexOf('--pool');
    return at > 0 && argv[at - 1]!.includes('shim') && !existsSync(recordDir(argv[at + 2] ?? ''));
  });

async function stopSlots(): Promise<string[]> {
  const found = slotPids();
  for (const pid of found) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
  }
  const deadline = Date.now() + 10_000;
  while (slotPids().length && Date.now() < deadline) await sleep(50);
  for (const pid of slotPids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  const logs = listDir(poolDir());
  for (const log of logs) rmSync(`${poolDir()}/${log}`, { force: true });
  return [...(found.length ? [`${found.length} idle pool slot${found.length === 1 ? '' : 's'}`] : []), ...(logs.length ? [`${logs.length} pool slot log${logs.length === 1 ? '' : 's'}`] : [])];
}

export async function clean(): Promise<string[]> {
  const ids = listIds();
  const removed = [...(await stopSlots()), ...(await stopShims(ids))];
  for (const id of ids) removeRecord(id);
  if (ids.length) removed.push(`${ids.length} jail record${ids.length === 1 ? '' : 's'} in ${jailsDir()}`);
  const sock = daemonSocket();
  if (existsSync(sock) && (await nobodyAnswers(sock))) {
    rmSync(sock, { force: true });
    removed.push(`stale socket ${sock}`);
  }
  return removed;
}
