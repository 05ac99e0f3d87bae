// How the daemon starts shims: now, for a request (a cold start), or ahead
// of any request, for the pool. A jail's start is mostly three Node starts
// one after another: the shim, the jail's init, and the helper that idmaps
// the image's layers in the init's mount namespace (a process of its own:
// setns into a mount namespace needs a single thread). A pool slot has paid
// all three before the request comes:
//   - a shim, started with `--pool LOG`, which at once
//   - starts the init in the shape of the usual request (request.ts's
//     POOL_SHAPE: locked, a network namespace of its own), writes its ID maps,
//   - starts the idmap helper inside the init's mount namespace, waiting,
//   - and says "ready" on fd 3, a channel to the daemon.
// A request of that shape takes a ready slot: the daemon renames the slot's
// log to the jail's and sends the jail's id; the shim goes on as any shim
// does, with its launcher (step 03's, with `parked`) making the overlay,
// cgroup and network around the waiting init, then "go" with the spec.
// Other requests (--privileged, --net host) start cold, as before.
// An idle slot lives only as long as its channel: a daemon that stops, or
// is SIGKILLed, closes it, and the slot's shim ends with its init. A taken
// slot is a shim like any other: it outlives the daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, renameSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { nodeArgs, nodeChildEnv } from '../../lib/bundle.mjs';
import { warn } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { cmdline, listPids } from '../../lib/proc.ts';
import { ensureDir } from '../../lib/state.ts';
import { EAGER } from '../03-namespaces/launcher.ts';
import { JAIL_ID, type JailRequest } from './api.ts';
import { logPath, newJailId, recordDir, wockerDir } from './records.ts';
import { POOL_SHAPE, shapeOf } from './request.ts';

/** Where idle slots keep their logs until a jail takes one. */
export const poolDir = (): string => join(wockerDir(), 'pool');

/**
 * The idle slots of this $JAIL_HOME's pool, found by their argv: `node …
 * shim … --pool LOG ID`, LOG in poolDir(), and an ID no record has yet (a
 * taken slot is a jail's shim, with a record).
 */
export function idleSlotPids(): number[] {
  return listPids().filter((pid) => {
    const argv = cmdline(pid) ?? [];
    const at = argv.indexOf('--pool');
    const [log = '', id = ''] = at > 0 ? argv.slice(at + 1, at + 3) : [];
    return log.startsWith(poolDir() + '/') && JAIL_ID.test(id) && !existsSync(recordDir(id));
  });
}

/** WOCKER_POOL=N: N slots waiting (default 2; 0: every jail starts cold). */
export function poolSize(): number {
  const n = Number(process.env.WOCKER_POOL ?? 2);
  return Number.isInteger(n) && n >= 0 && n <= 16 ? n : 2;
}

/** A detached shim with `args`, its stdout and stderr the file `log`; fd 3 a channel to us if asked. */
export async function spawnShim(args: string[], log: string, channel = false): Promise<ChildProcess> {
  // a slot (with a channel) compiles all of its script as it starts: its first request then runs compiled code
  const shim = await nodeArgs(repoPath('steps/10-wocker/shim.ts'), channel ? EAGER : []);
  const fd = openSync(log, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [...shim, ...args], {
      detached: true,
      cwd: '/',
      stdio: ['ignore', fd, fd, ...(channel ? (['pipe'] as const) : [])],
      env: { ...nodeChildEnv(), JAIL_QUIET: '1' },
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

/** A ready slot, taken: tell it its jail, and hear when its state changes. */
export interface Slot {
  /** The id of the jail it was started for: the record must be made with it. */
  id: string;
  /** Hands the slot its jail, whose record exists now: the slot's log becomes the jail's. */
  give(): void;
  /** Called at every change of the jail's state.json. */
  onState(poke: () => void): void;
  /** The daemon has its answer: it stops listening (the shim goes on alone). */
  release(): void;
}

interface Waiting {
  id: string;
  spawned: Promise<ChildProcess | undefined>;
  child: ChildProcess;
  channel: Socket;
  log: string;
  ready: boolean;
  poke?: () => void;
}

export class Pool {
  #slots = new Set<Waiting>();
  #closed = false;
  #failures = 0;
  readonly #shape = shapeOf(POOL_SHAPE);

  constructor(readonly size: number) {}

  /** How many slots wait ready, and how many are still starting (GET /info). */
  info(): { size: number; ready: number; starting: number } {
    const ready = [...this.#slots].filter((s) => s.ready).length;
    return { size: this.size, ready, starting: this.#slots.size - ready };
  }

  /** A request an idle slot can serve: the same namespaces and locks as POOL_SHAPE. */
  fits(req: JailRequest): boolean {
    try {
      return this.size > 0 && shapeOf(req) === this.#shape;
    } catch {
      return false; // flags step 09 refuses: the cold path's shim says why, as for any request
    }
  }

  /** Starts slots until `size` are ready or starting. */
  fill(): void {
    // a slot that dies before "ready" three times in a row: this host cannot, and cold starts still work
    if (this.#closed || this.#failures >= 3) return;
    while (this.#slots.size < this.size) this.#start();
  }

  /** A ready slot, taken out of the pool, or undefined: start cold. (fill() again once the jail runs: a new slot's Node start must not slow this jail's.) */
  take(): Slot | undefined {
    const w = [...this.#slots].find((s) => s.ready);
    if (!w) return undefined;
    this.#slots.delete(w);
    return {
      id: w.id,
      give: () => {
        renameSync(w.log, logPath(w.id));
        w.channel.write(w.id + '\n');
      },
      onState: (poke) => (w.poke = poke),
      release: () => w.channel.destroy(),
    };
  }

  /**
   * The daemon stops: every idle slot's channel closes, and each undoes
   * itself (its init, its cgroup, its log). Waits for them, so that a
   * stopped daemon leaves the host as it found it; a SIGKILLed one cannot
   * wait, and its slots do the same on their own a moment later.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const ends = [...this.#slots].map((w) =>
      w.spawned.then(async (child) => {
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        child.ref(); // waited for: the daemon's loop must not run dry (exit 13) before the slot has ended
        const exited = new Promise((resolve) => child.once('exit', resolve));
        w.channel.destroy();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 10_000)))]);
        clearTimeout(timer);
      }),
    );
    this.#slots.clear();
    await Promise.all(ends);
  }

  #start(): void {
    // only the pool's dir is private: $JAIL_HOME/run must stay 0755, a jail's root reaches its resolv.conf through it
    ensureDir(wockerDir());
    mkdirSync(poolDir(), { recursive: true, mode: 0o700 });
    const id = newJailId();
    const log = join(poolDir(), `${id}.log`);
    const w = { id, log, ready: false } as Waiting;
    this.#slots.add(w);
    const spawned = spawnShim(['--pool', log, id], log, true);
    w.spawned = spawned.catch(() => undefined);
    spawned.then(
      (child) => {
        w.child = child;
        w.channel = child.stdio[3] as Socket;
        w.channel.on('error', () => {});
        let buf = '';
        w.channel.setEncoding('utf8').on('data', (d: string) => {
          buf += d;
          for (let i = buf.indexOf('\n'); i !== -1; i = buf.indexOf('\n')) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line === 'ready') {
              w.ready = true;
              this.#failures = 0;
            } else if (line === 'state') w.poke?.();
            else if (line.startsWith('error ')) warn(`a pool slot could not get ready: ${line.slice(6)}`);
          }
        });
        w.channel.once('close', () => {
          if (!this.#slots.delete(w)) return; // taken, or the pool closed
          if (!w.ready && ++this.#failures === 3) warn("the pool's slots keep failing before they are ready: from now on every jail starts cold");
          this.fill();
        });
        if (this.#closed) w.channel.destroy();
      },
      (err: Error) => {
        this.#slots.delete(w);
        this.#failures++;
        warn(`a pool slot could not start: ${err.message}`);
      },
    );
  }
}
