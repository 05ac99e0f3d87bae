// The client's half: `wocker run|ps|logs|exec|stop|rm|images|info` as HTTP
// requests on the daemon's unix socket, and nothing else — like the docker
// CLI, it holds no state and touches no jail; each verb is one request (or
// two) that `curl --unix-socket` could make as well.
import { request } from 'node:http';
import { JailError } from '../../lib/errors.ts';
import { daemonSocket } from './daemon.ts';
import type { JailView } from './records.ts';

export interface Answer {
  status: number;
  body: string;
}

const NO_DAEMON = new JailError('the wocker daemon is not running: sudo npm run step 10', `it listens on ${daemonSocket()} (WOCKER_SOCK overrides)`);

/** One request on the socket; `onData` streams the body instead of collecting it. */
export function call(method: string, path: string, body?: unknown, onData?: (chunk: Buffer) => void): Promise<Answer> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      // agent: false: one connection per request; a kept-alive one the daemon closed meanwhile would fail with EPIPE
      { socketPath: daemonSocket(), agent: false, method, path, headers: text ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => (onData && res.statusCode! < 300 ? onData(d) : chunks.push(d)));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? NO_DAEMON : e.code === 'EACCES' ? new JailError(`cannot open ${daemonSocket()}: it is root's`, 'run it with sudo') : e));
    req.end(text);
  });
}

/** A JSON answer, or the daemon's one sentence as a JailError. */
export async function callJson<T>(method: string, path: string, body?: unknown): Promise<T> {
  const a = await call(method, path, body);
  let json: unknown;
  try {
    json = JSON.parse(a.body);
  } catch {
    throw new JailError(`the daemon answered ${a.status} with something that is not JSON`);
  }
  if (a.status >= 400) throw new JailError((json as { error?: string }).error ?? `the daemon answered ${a.status}`, undefined, 1);
  return json as T;
}

export interface RunOptions {
  image: string;
  hostname?: string;
  memory?: string;
  cpus?: string;
  pids?: string;
  net?: string;
  publish: string[];
  privileged: boolean;
  detach: boolean;
  rm: boolean;
  cmd: string[];
}

/** The words of `wocker run` after the verb: flags, IMAGE, then `-- CMD…` (docker's order). */
export function parseRun(argv: string[]): RunOptions {
  const o: RunOptions = { image: '', publish: [], privileged: false, detach: false, rm: false, cmd: [] };
  const valued: Record<string, 'hostname' | 'memory' | 'cpus' | 'pids' | 'net'> = { '--hostname': 'hostname', '--memory': 'memory', '-m': 'memory', '--cpus': 'cpus', '--pids': 'pids', '--net': 'net' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      o.cmd = argv.slice(i + 1);
      break;
    }
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new JailError(`${a} needs a value`, undefined, 2);
      return v;
    };
    if (valued[a]) o[valued[a]!] = value();
    else if (a === '-p' || a === '--publish') o.publish.push(value());
    else if (a === '--privileged') o.privileged = true;
    else if (a === '-d' || a === '--detach') o.detach = true;
    else if (a === '--rm') o.rm = true;
    else if (a.startsWith('-')) throw new JailError(`wocker run: unknown flag ${a}`, 'wocker run [--hostname H] [--memory M] [--cpus N] [--pids N] [--net MODE] [-p IP:HOST:PORT]… [--privileged] [-d] [--rm] IMAGE -- CMD…', 2);
    else if (!o.image) o.image = a;
    else throw new JailError(`wocker run: unexpected ${a}; put the command after --`, `e.g. wocker run ${o.image} -- ${a}`, 2);
  }
  if (!o.image) throw new JailError('wocker run: which image?', 'e.g. wocker run busybox -- sh -c "echo hi"', 2);
  return o;
}

/** The request body: only what was given, the daemon supplies the defaults. */
export function jailBody(o: RunOptions): Record<string, unknown> {
  const body: Record<string, unknown> = { image: o.image };
  for (const k of ['hostname', 'memory', 'cpus', 'pids', 'net'] as const) if (o[k] !== undefined) body[k] = o[k];
  if (o.publish.length) body.publish = o.publish;
  if (o.privileged) body.privileged = true;
  if (o.cmd.length) body.cmd = o.cmd;
  return body;
}

/** wocker run: the id with -d; otherwise the log as it grows, and the jail's own exit status. */
export async function runVerb(argv: string[]): Promise<number> {
  const o = parseRun(argv);
  const { id } = await callJson<{ id: string }>('POST', '/jails', jailBody(o));
  if (o.detach) {
    process.stdout.write(id + '\n');
    return 0;
  }
  // Ctrl-C stops the jail, as docker run's attached terminal does
  const stop = () => void call('POST', `/jails/${id}/stop`).catch(() => {});
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await call('GET', `/jails/${id}/logs?follow=1`, undefined, (d) => process.stdout.write(d));
  const view = await callJson<JailView>('GET', `/jails/${id}`);
  if (o.rm) await callJson('DELETE', `/jails/${id}?force=1`);
  return view.exitCode ?? 0;
}

export function formatPs(jails: JailView[]): string {
  const rows = [['ID', 'IMAGE', 'HOSTNAME', 'STATE', 'PID', 'IP', 'COMMAND']];
  for (const j of jails) {
    const state = j.state === 'exited' ? `exited (${j.exitCode ?? '?'})` : j.state;
    rows.push([j.id, j.image, j.hostname, state, String(j.pid ?? '-'), j.ip ?? '-', JSON.stringify(j.cmd.join(' ')).slice(0, 40)]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function logsVerb(id: string, follow: boolean): Promise<number> {
  const a = await call('GET', `/jails/${id}/logs${follow ? '?follow=1' : ''}`, undefined, (d) => process.stdout.write(d));
  if (a.status >= 400) throw new JailError(JSON.parse(a.body).error ?? `the daemon answered ${a.status}`);
  return 0;
}

export async function execVerb(id: string, cmd: string[]): Promise<number> {
  if (!cmd.length) throw new JailError('wocker exec: which command?', `e.g. wocker exec ${id} -- hostname`, 2);
  const r = await callJson<{ exitCode: number; output: string }>('POST', `/jails/${id}/exec`, { cmd });
  process.stdout.write(r.output);
  return r.exitCode;
}
