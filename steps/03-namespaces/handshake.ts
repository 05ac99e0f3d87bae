// The init and the launcher talk over one socket, fd 3 in the init:
//   init -> launcher  "pid 4242"        my PID as the host sees it
//   launcher -> init  "go"              uid maps, cgroups, veths are in place
//   launcher -> init  "go SPEC"         the same, from a launcher that started the init
//                                       before it knew the jail (step 10's pool): the
//                                       JSON spec replaces the one the init started with
//   init -> launcher  "running"         the target was started (spawned, or about to be exec'd)
//   init -> launcher  "error <message>" setup failed; the launcher explains
//   init -> launcher  anything else     a report for the launcher's onMessage
// The init must not start the target before "go": that is how a cgroup or a
// network exists before the first instruction of the target runs.
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { closeSync, readlinkSync, readSync, writeSync } from 'node:fs';
import { setCloexec } from '../../lib/libc.ts';

export const HANDSHAKE_FD = 3;

export function sendToLauncher(line: string): void {
  try {
    writeSync(HANDSHAKE_FD, line + '\n');
  } catch {}
}

let socket: Socket | undefined;
/** What the launcher sent after its "go" line, read with it: the channel's first bytes. */
let rest = '';

/**
 * Tells the launcher our host PID and waits for its "go". In a new user
 * namespace we started as an unmapped user (the launcher writes the ID maps
 * only now); unshare --keep-caps kept our capabilities across the exec as
 * ambient ones, so we can now become the namespace's root: setuid(0) inside
 * is the unprivileged host uid the map names.
 */
export async function waitForGo<T>(userns: boolean): Promise<T | undefined> {
  const sent = await receiveGo();
  if (userns) {
    // drop the launcher's supplementary groups; a rootless launcher had to
    // deny setgroups(2) to write its map, and then it has none worth dropping
    try {
      process.setgroups!([]);
    } catch {}
    process.setgid!(0);
    process.setuid!(0);
  }
  return sent ? (JSON.parse(sent) as T) : undefined;
}

/** Resolves with the spec that came with "go", or '' for a bare "go". */
function receiveGo(): Promise<string> {
  // /proc is still the host's here, so /proc/self names our PID in the host's
  // PID namespace, while getpid() already says 1.
  sendToLauncher(`pid ${readlinkSync('/proc/self')}`);
  // read on a later microtask: what the caller does next (loadLibc) overlaps the launcher's part
  return Promise.resolve().then(readGoLine);
}

/**
 * The launcher's line, by a blocking read(2): until "go" the init has
 * nothing else to do, and this needs neither node:net (~3 ms to load) nor a
 * turn of the event loop. 0 bytes means the launcher went away.
 */
function readGoLine(): string {
  const buf = Buffer.alloc(64 * 1024);
  let text = '';
  for (;;) {
    const n = readSync(HANDSHAKE_FD, buf, 0, buf.length, null);
    if (n === 0) throw new Error('the launcher went away before the jail started');
    text += buf.toString('utf8', 0, n);
    const end = text.indexOf('\n');
    if (end === -1) continue;
    const line = text.slice(0, end);
    if (line !== 'go' && !line.startsWith('go ')) throw new Error(`the launcher said ${JSON.stringify(line.slice(0, 40))}, not "go"`);
    rest = text.slice(end + 1);
    return line.slice(3);
  }
}

/**
 * The channel to the launcher after "go", for an init that keeps talking
 * (step 10's exec); it is close-on-exec, so no target inherits it.
 */
export function launcherChannel(): Socket {
  setCloexec(HANDSHAKE_FD);
  if (!socket) {
    const { Socket } = createRequire(import.meta.url)('node:net') as typeof import('node:net');
    socket = new Socket({ fd: HANDSHAKE_FD, readable: true, writable: false });
    if (rest) socket.unshift(Buffer.from(rest));
  }
  return socket;
}

let closed = false;

/** Setup is done: close fd 3, so the target does not inherit it (once: a second close could hit an fd reused since). */
export function closeHandshake(): void {
  if (closed) return;
  closed = true;
  if (socket) socket.destroy();
  else closeSync(HANDSHAKE_FD);
}

/** Reports a setup failure to the launcher and exits; 125 is "the jail runtime failed", as in docker run. */
export function die(err: unknown): never {
  const e = err as Error & { code?: string };
  sendToLauncher(`error ${JSON.stringify({ message: e.message, code: e.code })}`);
  if (process.env.DEBUG) process.stderr.write(`jail init: ${e.stack}\n`);
  process.exit(125);
}

export function readSpec<T>(): T {
  const raw = process.env.JAIL_SPEC;
  if (!raw) {
    process.stderr.write('this is the jail init; the launcher starts it (npm run step 3/4)\n');
    process.exit(2);
  }
  return JSON.parse(raw) as T;
}
