// The text's wocker: "这个进程本身就是一个http的服务" — a process that is
// itself an HTTP service and makes jails on request. Plain node:http, on a
// unix socket by default, as dockerd listens on /run/docker.sock:
//   - the socket's mode (0600, root's) is the whole access control: whoever
//     may open it may make jails, which is to say, is root (unix(7));
//   - TCP only on a loopback address, and then every request carries a
//     bearer token read from a 0600 file: a port cannot tell who connects;
//   - the daemon keeps nothing in memory (jails.ts, records.ts): kill it,
//     start it again, and it manages the same jails; stopping it stops no jail.
import { timingSafeEqual, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP } from 'node:net';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, ok, showCommand } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { ensureDir } from '../../lib/state.ts';
import { ApiError } from './api.ts';
import { sendError } from './http.ts';
import { listJails, usePool } from './jails.ts';
import { Pool, poolSize } from './pool.ts';
import { wockerDir } from './records.ts';
import { route } from './routes.ts';

export const daemonSocket = (): string => process.env.WOCKER_SOCK || '/run/build-a-jail/wocker.sock';
export const daemonFlags = {
  listen: { type: 'string', value: 'ADDR:PORT', help: 'also listen on TCP, loopback only (127.0.0.1 or [::1]); every request then needs the token' },
} as const;

export const tokenPath = (): string => join(wockerDir(), 'token');

/** --listen ADDR:PORT, loopback only: 127.0.0.0/8 or [::1]. 0.0.0.0 would hand the host to the network. */
export function parseListen(addr: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(addr);
  const port = Number(m?.[2]);
  if (!m || !(port > 0 && port < 65536)) throw new JailError(`--listen ${addr}: not an ADDRESS:PORT`, 'e.g. --listen 127.0.0.1:2375', 2);
  const host = m[1]!;
  const loopback = (isIP(host) === 4 && host.startsWith('127.')) || (isIP(host) === 6 && host === '::1');
  if (!loopback) throw new JailError(`--listen ${addr}: only a loopback address may listen (127.0.0.1 or [::1]), not ${host}`, 'whoever reaches this port may make root jails: use the unix socket, or ssh -L to reach it from afar', 2);
  return { host, port };
}

/** The bearer token for TCP: made at the first start, 0600, root's. */
export function ensureToken(): string {
  ensureDir(wockerDir()); // 0755 like $JAIL_HOME/run above it: the token itself is 0600
  try {
    writeFileSync(tokenPath(), randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFileSync(tokenPath(), 'utf8').trim();
}

/** Someone answers on the socket: another daemon. Nobody: a stale socket left by a killed one. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function claimSocket(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new JailError(`${path} exists and is not a socket`, 'remove it, or set WOCKER_SOCK to another path');
  if (await answers(path)) throw new JailError(`another wocker daemon answers on ${path}`, 'stop it first (Ctrl-C in its terminal), or set WOCKER_SOCK to another path');
  rmSync(path);
}

function authorized(req: IncomingMessage, token: Buffer): boolean {
  const given = Buffer.from(/^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '');
  return given.length === token.length && timingSafeEqual(given, token);
}

function handler(token?: Buffer) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const started = Date.now();
    res.on('finish', () => explain(`${req.method} ${(req.url ?? '').slice(0, 100)} ${res.statusCode} (${Date.now() - started} ms)`));
    try {
      if (token && !authorized(req, token)) throw new ApiError(401, 'this port needs Authorization: Bearer TOKEN (the token is in ' + tokenPath() + ')');
      await route(req, res);
    } catch (err) {
      sendError(res, err);
    }
  };
}

/** Malformed HTTP never reaches a handler; answer it in JSON too, then hang up. */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable) return void socket.destroy();
  const [status, text] = err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
  const body = JSON.stringify({ error: `the request is not HTTP/1.1 this daemon can read (${err.code ?? err.message})` }) + '\n';
  socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

function makeServer(token?: Buffer): Server {
  const server = createServer(handler(token));
  server.on('clientError', onClientError);
  return server;
}

const listen = (server: Server, ...args: [string] | [number, string]) =>
  new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(...(args as [string]), () => resolve());
  });

export interface Daemon {
  socket: string;
  tcp?: string;
  close(): Promise<void>;
}

export async function startDaemon(opts: { listen?: string } = {}): Promise<Daemon> {
  requireRoot('the wocker daemon');
  const tcpAddr = opts.listen ? parseListen(opts.listen) : undefined; // refused before anything is made
  const path = daemonSocket();
  await claimSocket(path);
  heading('The wocker daemon: an HTTP service that makes jails (the text\'s wocker.go)');
  const unix = makeServer();
  await listen(unix, path);
  chownSync(path, 0, 0);
  chmodSync(path, 0o600);
  ok(`listening on ${path} (mode 0600: root only)`);
  showCommand(`curl --unix-socket ${path} http://wocker/jails`);
  const servers = [unix];
  let tcp: string | undefined;
  if (tcpAddr) {
    const token = ensureToken();
    const server = makeServer(Buffer.from(token));
    try {
      await listen(server, tcpAddr.port, tcpAddr.host);
    } catch (err) {
      unix.close();
      rmSync(path, { force: true });
      throw new JailError(`cannot listen on ${opts.listen}: ${(err as Error).message}`, 'pick another port');
    }
    servers.push(server);
    tcp = opts.listen;
    ok(`listening on http://${opts.listen} too; every request needs the token in ${tokenPath()}`);
    showCommand(`curl -H "Authorization: Bearer $(sudo cat ${tokenPath()})" http://${opts.listen}/jails`);
  }
  const running = listJails().filter((j) => j.state === 'running');
  if (running.length) explain(`live-restore: ${running.length} jail${running.length === 1 ? '' : 's'} found running, each owned by its shim`);
  const pool = new Pool(poolSize());
  usePool(pool);
  pool.fill();
  if (pool.size) explain(`pool: ${pool.size} jail inits waiting in fresh namespaces for the usual request (WOCKER_POOL=0: none)`);
  return {
    socket: path,
    tcp,
    async close() {
      usePool(undefined);
      const slots = pool.close();
      const closed = Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      for (const s of servers) s.closeAllConnections(); // a `logs -f` would hold close() open
      await Promise.all([closed, slots]);
      rmSync(path, { force: true });
    },
  };
}


/** The daemon in the foreground until a signal (npm run step 10, npm run wocker -- daemon): the jails stay. */
export async function runDaemon(listenAddr?: string): Promise<number> {
  const daemon = await startDaemon({ listen: listenAddr });
  const sig = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  await daemon.close();
  explain(`${sig}: the daemon stops; its jails keep running, each owned by its shim (the next daemon finds them)`);
  return 0;
}
