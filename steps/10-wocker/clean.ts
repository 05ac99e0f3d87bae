// npm run clean, step 10's part: shims still running (their jails with
// them), every jail's record, running or exited (clean means clean), and a
// daemon's socket that nobody answers on. A shim gets SIGTERM first, so its
// launcher unwinds the network, the cgroup and the overlay itself; SIGKILL
// only if it does not end. Runs before no other step's cleaner needs it:
// steps 05-09's cleaners then find nothing of these jails left.
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { jailsDir, listIds, readState, removeRecord, shimAlive } from './records.ts';
import { daemonSocket } from './daemon.ts';

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

export async function clean(): Promise<string[]> {
  const ids = listIds();
  const removed = await stopShims(ids);
  for (const id of ids) removeRecord(id);
  if (ids.length) removed.push(`${ids.length} jail record${ids.length === 1 ? '' : 's'} in ${jailsDir()}`);
  const sock = daemonSocket();
  if (existsSync(sock) && (await nobodyAnswers(sock))) {
    rmSync(sock, { force: true });
    removed.push(`stale socket ${sock}`);
  }
  return removed;
}
