// The daemon's verbs on jails, each a few lines over the records on disk
// (records.ts) and the jail's shim (shim.ts). The daemon holds no jail in
// memory: every answer is read from the disk at the moment it is asked,
// so a daemon started again after a SIGKILL knows what the old one knew.
//   create  a record, then a detached shim (or a pool slot's, waiting: pool.ts);
//           wait until it says running (or why not)
//   stop    SIGTERM to the shim: its launcher stops the jail and unwinds everything
//   remove  the record, once the jail is gone
//   exec    forwarded to the shim's socket, which forwards it to PID 1
import { request } from 'node:http';
import { BUILTIN_NAMES, imageExists } from '../09-layers/store.ts';
import { ApiError, type JailRequest } from './api.ts';
import { spawnShim, type Pool, type Slot } from './pool.ts';
import { createRecord, listIds, logPath, readState, removeRecord, shimAlive, shimSocket, viewOf, type JailView } from './records.ts';

/** A jail starting costs a Node start of its shim and of its init: at most this many at once, the rest wait. */
export const MAX_CREATING = 4;
/** The launcher gives PID 1 3 s after SIGTERM, then SIGKILL; then it unwinds the network, cgroup and overlay (20 at once on 2 cores: many seconds). */
const STOP_WAIT_MS = 60_000;
const START_WAIT_MS = 120_000;

/** Waits until `probe` is truthy, or the time is up (then undefined); `wake` may ask for a look before the next tick. */
async function until<T>(probe: () => T | undefined, ms: number, every = 50, wake?: (poke: () => void) => void): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  let poke: (() => void) | undefined;
  wake?.(() => poke?.());
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) return undefined;
    await new Promise<void>((resolve) => {
      poke = resolve;
      setTimeout(resolve, every);
    });
  }
}

/** A counting semaphore: the bound on creations at once. */
class Slots {
  #free: number;
  #waiting: (() => void)[] = [];
  constructor(readonly size: number) {
    this.#free = size;
  }
  /** No creation holds a slot, and none waits for one. */
  get idle(): boolean {
    return this.#free === this.size;
  }
  async take(): Promise<void> {
    if (this.#free > 0) return void this.#free--;
    await new Promise<void>((r) => this.#waiting.push(r));
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}
const creating = new Slots(MAX_CREATING);

export function listJails(): JailView[] {
  return listIds().flatMap((id) => viewOf(id) ?? []);
}

/** One jail's view; 404 for an id that names no record. */
export function jailView(id: string): JailView {
  const view = viewOf(id);
  if (!view) throw new ApiError(404, `no jail ${id}`);
  return view;
}

/** The idle slots the daemon keeps (pool.ts); none until the daemon starts them. */
let pool: Pool | undefined;
export const usePool = (p: Pool | undefined): void => void (pool = p);

/** GET /info: the jails by state, and the pool's slots. */
export function daemonInfo() {
  const jails = listJails();
  return { pid: process.pid, jails: { running: jails.filter((j) => j.state === 'running').length, total: jails.length }, pool: pool?.info() ?? { size: 0, ready: 0, starting: 0 } };
}

/** Until the shim says running or exited; a jail that never ran is the shim's sentence, as an error. */
async function waitStarted(id: string, slot?: Slot): Promise<void> {
  // a state file is a few bytes: reading it every 10 ms costs nothing, and answers the 201 sooner;
  // a pool slot also says "state" on its channel at every change, and is read at once
  const state = await until(() => {
    const s = readState(id);
    if (s?.status === 'running' || s?.status === 'exited') return s;
    if (s && !shimAlive(s)) return { ...s, status: 'exited' as const, error: 'the jail\'s shim died while starting it' };
    return undefined;
  }, START_WAIT_MS, 10, slot && ((poke) => slot.onState(poke)));
  if (!state) throw new ApiError(504, `jail ${id} did not start within ${START_WAIT_MS / 1000} s`);
  if (state.error) {
    // a refused flag (exit 2) or a command the image lacks (127, 126) is the request's fault; anything else is the host's
    throw new ApiError([2, 126, 127].includes(state.exitCode ?? 0) ? 400 : 500, state.error);
  }
}

/** POST /jails: nothing is made for a request that fails; a jail that fails to start leaves no record. */
export async function createJail(req: JailRequest): Promise<string> {
  if (!imageExists(req.image) && !BUILTIN_NAMES.includes(req.image)) throw new ApiError(404, `no image named ${req.image}; GET /images lists them`);
  await creating.take();
  let id: string | undefined;
  let slot: Slot | undefined;
  try {
    // the usual request takes a slot whose init waits already; any other, or an empty pool, starts cold
    slot = pool?.fits(req) ? pool.take() : undefined;
    id = createRecord(req, slot?.id);
    if (slot) slot.give();
    else await spawnShim([id], logPath(id));
    await waitStarted(id, slot);
    return id;
  } catch (err) {
    if (id) {
      // SIGTERM first: a shim still unwinding (veth, cgroup, overlay) must finish, or they leak
      const s = readState(id);
      if (s && shimAlive(s)) process.kill(s.shimPid, 'SIGTERM');
      if (!(await until(() => !shimAlive(readState(id!)) || undefined, STOP_WAIT_MS))) process.kill(s!.shimPid, 'SIGKILL');
      removeRecord(id);
    }
    throw err;
  } finally {
    slot?.release();
    creating.give();
    // the pool is filled again only once no creation is under way: a new slot's three Node starts would slow them
    if (creating.idle) pool?.fill();
  }
}

const ended = (id: string) => {
  const v = viewOf(id);
  return v && v.state === 'exited' && !shimAlive(readState(id)) ? v : undefined;
};

/** POST /jails/ID/stop: the shim's launcher turns SIGTERM into a graceful stop and unwinds the host. */
export async function stopJail(id: string): Promise<JailView> {
  const view = jailView(id);
  const s = readState(id);
  if (view.state === 'exited' || !s) return view;
  try {
    process.kill(s.shimPid, 'SIGTERM');
  } catch {}
  const done = await until(() => ended(id), STOP_WAIT_MS);
  if (done) return done;
  // a shim that does not stop: SIGKILL; its jail dies with it (pdeathsig), npm run clean removes the rest
  try {
    process.kill(s.shimPid, 'SIGKILL');
  } catch {}
  return (await until(() => ended(id), 2000)) ?? jailView(id);
}

/** DELETE /jails/ID[?force=1]: a running jail only with force, stopped first. */
export async function removeJail(id: string, force: boolean): Promise<void> {
  const view = jailView(id);
  if (view.state !== 'exited') {
    if (!force) throw new ApiError(409, `jail ${id} is ${view.state}; stop it first, or DELETE /jails/${id}?force=1`);
    await stopJail(id);
  }
  await until(() => !shimAlive(readState(id)) || undefined, 5000);
  removeRecord(id);
}

/** POST /jails/ID/exec, through the shim's socket; 409 unless the jail runs. */
export async function execIn(id: string, cmd: string[]): Promise<{ exitCode: number; output: string }> {
  const view = jailView(id);
  if (view.state !== 'running') throw new ApiError(409, `jail ${id} is ${view.state}, not running`);
  const body = JSON.stringify({ cmd });
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: shimSocket(id), method: 'POST', path: '/exec', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        try {
          const answer = JSON.parse(text);
          if (res.statusCode === 200) resolve(answer);
          else reject(new ApiError(res.statusCode === 400 ? 400 : 500, answer.error ?? `the shim answered ${res.statusCode}`));
        } catch {
          reject(new ApiError(500, `the shim of jail ${id} answered something that is not JSON`));
        }
      });
    });
    req.on('error', (e) => reject(new ApiError(409, `jail ${id} cannot be reached (${(e as NodeJS.ErrnoException).code ?? e.message}); it may be ending`)));
    req.end(body);
  });
}
