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
import { Socket } from 'node:net';
import { readlinkSync, writeSync } from 'node:fs';
import { setCloexec } from '../../lib/libc.ts';

export const HANDSHAKE_FD = 3;

export function sendToLauncher(line: string): void {
  try {
    writeSync(HANDSHAKE_FD, line + '\n');
  } catch {}
}

let socket: Socket | undefined;

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
  return new Promise((resolve, reject) => {
    const sock = (socket = new Socket({ fd: HANDSHAKE_FD, readable: true, writable: false }));
    let buf = '';
    const gone = () => reject(new Error('the launcher went away before the jail started'));
    const onData = (d: Buffer) => {
      buf += d;
      const end = buf.indexOf('\n');
      if (end === -1) return;
      const line = buf.slice(0, end);
      if (line !== 'go' && !line.startsWith('go ')) return reject(new Error(`the launcher said ${JSON.stringify(line.slice(0, 40))}, not "go"`));
      // done listening: a later reader (step 10's exec) gets the channel to itself
      sock.off('data', onData).off('end', gone).off('error', reject);
      sock.pause();
      sock.unref();
      resolve(line.slice(3));
    };
    sock.on('data', onData);
    sock.on('end', gone);
    sock.on('error', reject);
  });
}

/**
 * The channel to the launcher after "go", for an init that keeps talking
 * (step 10's exec); it is close-on-exec, so no target inherits it.
 */
export function launcherChannel(): Socket {
  if (!socket) throw new Error('launcherChannel: no handshake yet');
  setCloexec(HANDSHAKE_FD);
  return socket;
}

/** Setup is done: close fd 3, so the target does not inherit it. */
export function closeHandshake(): void {
  socket?.destroy();
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
