// npm run clean, step 10's part: shims still running (their jails with
// them), every jail's record, running or exited (clean means clean), the
// pool's idle slots and their logs, and a daemon's socket that nobody
// answers on. A shim gets SIGTERM first, so its launcher unwinds the
// network, the cgroup and the overlay itself (an idle slot, its init and
// its cgroup); SIGKILL only if it does not end. Runs before no other step's cleaner needs it:
// steps 05-09's cleaners then find nothing of these jails left.
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { listDir } from '../../lib/state.ts';
import { jailsDir, listIds, readState, removeRecord, shimAlive } from './records.ts';
import { daemonSocket } from './daemon.ts';
import { idleSlotPids, poolDir } from './pool.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * SIGTERM to every process `alive()` names, then SIGKILL to those it still
 * names after 10 s: a shim, or a pool slot, undoes what it made on SIGTERM.
 */
async function terminate(alive: () => number[]): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of alive()) {
      try {
        process.kill(pid, sig);
      } catch {}
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + 10_000;
  while (alive().length && Date.now() < deadline) await sleep(50);
  signal('SIGKILL');
}

async function stopShims(ids: string[]): Promise<string[]> {
  const alive = ids.filter((id) => shimAlive(readState(id)));
  // by its state file: a shim's PID with its start time, never a PID reused since
  await terminate(() => alive.flatMap((id) => {
    const s = readState(id);
    return s && shimAlive(s) ? [s.shimPid] : [];
  }));
  return alive.map((id) => `shim of jail ${id}`);
}

const nobodyAnswers = (path: string) =>
  new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });

async function stopSlots(): Promise<string[]> {
  const found = idleSlotPids();
  await terminate(idleSlotPids);
  const logs = listDir(poolDir());
  for (const log of logs) rmSync(join(poolDir(), log), { force: true });
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
