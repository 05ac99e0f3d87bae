// Step 10's tests, their daemon and its API: the daemon in a child process
// as `npm run step 10` runs it, one request at a time on its socket (or a
// TCP port), the client, and the jails made through them. The socket is
// $WOCKER_SOCK, which each test file sets to one under its own JAIL_HOME.
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { repo, runNode, stepArgv, waitFor } from './helpers.ts';

const sock = (): string => process.env.WOCKER_SOCK!;

let daemon: ChildProcess | undefined;
export let daemonLog = '';
const alive = (child: ChildProcess | undefined): child is ChildProcess => !!child && child.exitCode === null && child.signalCode === null;

/** `npm run step 10 [args]`, with `env` over ours; resolves once it answers /_ping. */
export async function startDaemon(args: string[] = [], env: Record<string, string> = {}): Promise<ChildProcess> {
  const [cmd, ...rest] = stepArgv(10, ...args);
  const child = spawn(cmd!, rest, { cwd: repo, env: { ...process.env, JAIL_QUIET: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d) => (daemonLog += d));
  child.stderr!.on('data', (d) => (daemonLog += d));
  daemon = child;
  await waitFor('the daemon to answer', async () => (await api('GET', '/_ping')).status === 200, 30_000);
  return child;
}

/** Stops the daemon (SIGTERM: it waits for its idle pool slots; SIGKILL: it cannot) and waits for its end. */
export async function stopDaemon(sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const child = daemon;
  if (!alive(child)) return;
  const gone = new Promise((r) => child.once('close', r));
  child.kill(sig);
  await gone;
}

export const daemonRunning = (): boolean => alive(daemon);

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/** One request on the daemon's socket (or a TCP port): body as a string is sent as it is. */
export function api(method: string, path: string, body?: unknown, opts: { port?: number; headers?: Record<string, string> } = {}): Promise<Reply> {
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  // agent: false, as the client does: no kept-alive connection that the daemon may have closed meanwhile
  const where = { agent: false, ...(opts.port ? { host: '127.0.0.1', port: opts.port } : { socketPath: sock() }) };
  return new Promise((resolve, reject) => {
    const req = request({ ...where, method, path, headers: { ...(text !== undefined ? { 'content-length': String(Buffer.byteLength(text)) } : {}), ...opts.headers } }, (res) => {
      let t = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (t += d));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(t);
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text: t, json });
      });
    });
    // a 413 may hang up while the body is still being sent: the answer has already come
    req.on('error', reject);
    req.end(text);
  });
}

/** Raw bytes on the socket, and what comes back before it closes. */
export function rawRequest(bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(sock());
    let out = '';
    s.on('data', (d) => (out += d));
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    s.end(bytes);
  });
}

/** The client, `npm run wocker -- ARGS`. */
export const wocker = (...args: string[]) => runNode([join(repo, 'bin/wocker.ts'), ...args], { env: { WOCKER_SOCK: sock() } });

export async function createJail(body: Record<string, unknown>): Promise<string> {
  const r = await api('POST', '/jails', body);
  assert.is(r.status, 201, `POST /jails ${JSON.stringify(body)}: ${r.text}`);
  return r.json.id;
}

export const view = async (id: string) => (await api('GET', `/jails/${id}`)).json;
export const exec = async (id: string, cmd: string[]) => {
  const r = await api('POST', `/jails/${id}/exec`, { cmd });
  assert.is(r.status, 200, r.text);
  return r.json as { exitCode: number; output: string };
};

/** Every jail removed (a daemon started for it if none runs: `env` is its environment). */
export async function removeEveryJail(env: Record<string, string> = {}): Promise<void> {
  if (!alive(daemon)) await startDaemon([], env);
  const jails = (await api('GET', '/jails')).json as { id: string }[];
  await Promise.all(jails.map((j) => api('DELETE', `/jails/${j.id}?force=1`)));
  assert.equal((await api('GET', '/jails')).json, [], 'every jail removed');
}
