// One creation through the wocker daemon, timed, and where its time went.
// Three witnesses, none of them the daemon's own word:
//   - the record's files: request.json (the daemon made the record) and
//     state.json, which the shim rewrites at "starting" and "running" (their
//     mtimes, the files seen by inotify as they are renamed into place);
//   - the start times in /proc of the jail's init and of its target;
//   - whether the jail came from the pool: its init was already running
//     when the POST was sent (a cold one's is forked after it).
import { statSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { JailError } from '../lib/errors.ts';
import { childrenOf, ticksNow } from '../lib/proc.ts';
import { JAIL_ID } from '../steps/10-wocker/api.ts';
import { jailsDir, readState, recordDir } from '../steps/10-wocker/records.ts';
import { api, removeJail } from './wocker-daemon.ts';
import { sleep, startedAt, startedBefore, tryOr } from './wocker-probe.ts';

/** The usual request, the pool's shape: busybox, no network, a target that waits. */
export const SLEEPER = { image: 'busybox', net: 'none', cmd: ['sleep', '1000'] };

// The init says "running" on its channel right after it spawned the target,
// and the shim writes it to state.json then: the init's own part (mounts,
// pivot_root, locks, the spawn) is before "running"; "running" -> target
// forked is a check that it is about 0.
export const COLD_PHASES = [
  'request sent -> record made (daemon: parse, check, a slot; ms clocks: about 0)',
  'record -> shim up, "starting" (spawn, Node start, the shim bundle)',
  'shim up -> init forked (launcher: cgroup, overlay dirs, unshare) [tick]',
  'init forked -> "running" (init Node start, id maps, idmap helper, lo, "go", the init\'s part) [tick]',
  '"running" -> 201 received (the daemon looks every 10 ms)',
  '"running" -> target forked (the init spawns it, then says "running": about 0) [tick]',
];
export const POOL_PHASES = [
  'request sent -> record made (daemon: parse, check, take a ready slot; about 0)',
  'record -> "starting" (the slot\'s shim reads its id on the channel)',
  '"starting" -> "running" (overlay, idmap by the waiting helper, limits, "go", the init\'s part)',
  '"running" -> 201 received (the daemon hears "state" on the slot\'s channel)',
  '"running" -> target forked (the init spawns it, then says "running": about 0) [tick]',
];

/**
 * A file's mtime on performance.now()'s scale (the wall clock's offset taken
 * now: the two drift apart): when it was written, not when inotify told us
 * (~5 ms later). The kernel stamps mtimes from its coarse clock, updated once
 * a jiffy (1-10 ms): a phase that is about 0 may read a few ms below it.
 */
export const writtenAt = (path: string) => statSync(path).mtimeMs - (Date.now() - performance.now());

const seen = new Map<string, { states: Map<string, number>; watcher?: FSWatcher }>();

/** Notes the state in state.json now, if new: at its mtime (the file may have been written before we watched). */
function noteState(id: string, states: Map<string, number>): void {
  const status = readState(id)?.status;
  const at = tryOr(() => Math.min(performance.now(), writtenAt(join(recordDir(id), 'state.json'))), performance.now());
  if (status && !states.has(status)) states.set(status, at);
}

/**
 * inotify on the records: when each jail's shim writes "starting" and
 * "running" to its state.json. A slot's shim writes "starting" within a ms
 * of the record's birth, before our watch on the new dir may exist: the
 * state already there is noted as the watch begins.
 */
export function watchRecords(): FSWatcher {
  const w = watch(jailsDir(), (_event, name) => {
    if (typeof name !== 'string' || !JAIL_ID.test(name) || seen.has(name)) return;
    const rec = { states: new Map<string, number>(), watcher: undefined as FSWatcher | undefined };
    seen.set(name, rec);
    rec.watcher = tryOr(() => watch(recordDir(name), (_e, file) => file === 'state.json' && noteState(name, rec.states)), undefined);
    rec.watcher?.on('error', () => {});
    noteState(name, rec.states);
  });
  w.on('error', () => {});
  return w;
}
const forget = (id: string) => (seen.get(id)?.watcher?.close(), seen.delete(id));

export interface Creation {
  id: string;
  /** POST sent -> 201 received. */
  ms: number;
  /** Its init was running before the POST: a pool slot's. */
  pooled: boolean;
  /** COLD_PHASES or POOL_PHASES, as `pooled` says; undefined when a witness was missing. */
  phases?: number[];
}

/** POST /jails of a sleeper, alone: ms to its 201, where it came from; its phases on the side. */
export async function createOne(): Promise<Creation> {
  const tick = ticksNow(); // before the clock that times it: its read is not in the time
  const sent = performance.now();
  const r = await api('POST', '/jails', SLEEPER);
  const answered = performance.now();
  if (r.status !== 201) throw new JailError(`POST /jails answered ${r.status}: ${r.json?.error ?? ''}`);
  const id: string = r.json.id;
  const s = readState(id);
  const pooled = startedBefore(s?.initPid, tick);
  // the target was spawned before "running": it is the init's child by the 201 (looked for again a little, to be sure)
  let target: number | undefined;
  for (let i = 0; i < 100 && s?.initPid && !target; i++) {
    target = childrenOf(s.initPid)[0];
    if (!target) await sleep(10);
  }
  const [starting, running] = [seen.get(id)?.states.get('starting'), seen.get(id)?.states.get('running')];
  const [initFork, targetFork] = [startedAt(s?.initPid), startedAt(target)];
  const record = writtenAt(join(recordDir(id), 'request.json'));
  forget(id);
  if (!starting || !running || targetFork === undefined) return { id, ms: answered - sent, pooled };
  if (pooled) return { id, ms: answered - sent, pooled, phases: [record - sent, starting - record, running - starting, answered - running, targetFork - running] };
  if (initFork === undefined) return { id, ms: answered - sent, pooled };
  return { id, ms: answered - sent, pooled, phases: [record - sent, starting - record, initFork - starting, running - initFork, answered - running, targetFork - running] };
}

/** A /bin/true jail, as `wocker run --rm busybox -- /bin/true` would: POST, GET every 5 ms until exited. */
export async function runTrue(): Promise<number> {
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
