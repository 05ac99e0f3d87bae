// What the daemon accepts, checked before anything is made. The API takes
// names, never paths; an argv array, never a shell string; bounded limits.
// Every refusal is an ApiError: an HTTP status and one sentence, sent as
// {"error": "…"}. A refused request makes nothing: no cgroup, no link, no
// directory, no state file.
import { totalmem } from 'node:os';
import { checkHostname } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { parsePublish } from '../05-network-bridge/modes.ts';
import { parseCpus, parsePids, parseSize } from '../06-cgroups/flags.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Image names as step 09 stores them: no '/', no '..', at most 64 characters. */
export const IMAGE_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
/** A jail's id: what POST /jails answers, and the only thing the paths accept. */
export const JAIL_ID = /^[0-9a-f]{12}$/;

/** Bodies larger than this get 413: a jail request is a few hundred bytes. */
export const MAX_BODY = 64 * 1024;
/** At most this many pids per jail: enough for a service, not a fork bomb's wish. */
export const MAX_PIDS = 4096;
const MAX_ARGS = 256;
const MAX_ARG_BYTES = 4096;

export type NetMode = 'none' | 'host' | 'bridge';

/** POST /jails, after checking: every field typed and bounded. */
export interface JailRequest {
  image: string;
  hostname: string;
  cmd: string[];
  memory?: string;
  cpus?: string;
  pids?: string;
  net: NetMode;
  publish: string[];
  privileged: boolean;
}

const FIELDS = ['image', 'hostname', 'cmd', 'memory', 'cpus', 'pids', 'net', 'publish', 'privileged'] as const;

/** Parses a request body as JSON: 400 for anything but one JSON object. */
export function parseJson(body: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new ApiError(400, 'the body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ApiError(400, 'the body must be a JSON object');
  return value as Record<string, unknown>;
}

/** A printable, short string: no control characters (they end up in logs and terminals). */
function text(name: string, v: unknown, max = 256): string {
  if (typeof v !== 'string') throw new ApiError(400, `"${name}" must be a string`);
  if (v.length > max) throw new ApiError(400, `"${name}" is longer than ${max} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) throw new ApiError(400, `"${name}" holds a control character`);
  return v;
}

/** The argv of the jail's command: an array of strings, never a shell string. */
export function checkArgv(name: string, v: unknown): string[] {
  if (!Array.isArray(v) || v.length === 0) throw new ApiError(400, `"${name}" must be a non-empty array of strings (an argv, not a shell string)`);
  if (v.length > MAX_ARGS) throw new ApiError(400, `"${name}" has more than ${MAX_ARGS} arguments`);
  if (v[0] === '') throw new ApiError(400, `"${name}[0]" is empty: it names the program to run`);
  return v.map((a, i) => {
    if (typeof a !== 'string') throw new ApiError(400, `"${name}[${i}]" must be a string`);
    if (Buffer.byteLength(a) > MAX_ARG_BYTES) throw new ApiError(400, `"${name}[${i}]" is longer than ${MAX_ARG_BYTES} bytes`);
    if (a.includes('\0')) throw new ApiError(400, `"${name}[${i}]" holds a NUL byte`);
    return a;
  });
}

/** The workshop's own parsers (steps 05 and 06) say what is wrong; the API says it as a 400. */
function viaStep<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof JailError) throw new ApiError(400, err.message);
    throw err;
  }
}

/** Checks a POST /jails body field by field; unknown fields and wrong types are 400. */
export function checkJailRequest(body: Record<string, unknown>): JailRequest {
  const unknown = Object.keys(body).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknown.length) throw new ApiError(400, `unknown field "${unknown[0]}"; the fields are ${FIELDS.join(', ')}`);
  const image = text('image', body.image ?? 'busybox', 64);
  if (!IMAGE_NAME.test(image)) throw new ApiError(400, `"image" must be an image name like busybox (lowercase letters, digits, . _ -; at most 64), not ${JSON.stringify(image)}`);
  const hostname = text('hostname', body.hostname ?? 'jail', 64);
  viaStep(() => checkHostname(hostname));
  const cmd = checkArgv('cmd', body.cmd ?? ['/bin/sh', '-c', 'sleep infinity']);
  const net = text('net', body.net ?? 'none', 8) as NetMode;
  if (!['none', 'host', 'bridge'].includes(net)) throw new ApiError(400, `"net" must be none, host or bridge, not ${JSON.stringify(net)}`);
  const publish = body.publish === undefined ? [] : body.publish;
  if (!Array.isArray(publish) || publish.some((p) => typeof p !== 'string')) throw new ApiError(400, '"publish" must be an array of strings like "127.0.0.1:8080:80"');
  for (const p of publish as string[]) viaStep(() => parsePublish(text('publish', p, 64)));
  if (publish.length && net !== 'bridge') throw new ApiError(400, '"publish" needs "net": "bridge"');
  if (body.privileged !== undefined && typeof body.privileged !== 'boolean') throw new ApiError(400, '"privileged" must be true or false');
  const req: JailRequest = { image, hostname, cmd, net, publish: publish as string[], privileged: body.privileged === true };
  if (body.memory !== undefined) {
    const memory = typeof body.memory === 'number' ? String(body.memory) : text('memory', body.memory, 32);
    const bytes = viaStep(() => parseSize(memory, '"memory"'));
    if (bytes > totalmem()) throw new ApiError(400, `"memory" ${memory} is more than this host has (${Math.floor(totalmem() / 2 ** 20)}M)`);
    req.memory = memory;
  }
  if (body.cpus !== undefined) {
    const cpus = typeof body.cpus === 'number' ? String(body.cpus) : text('cpus', body.cpus, 16);
    viaStep(() => parseCpus(cpus, '"cpus"'));
    req.cpus = cpus;
  }
  if (body.pids !== undefined) {
    const pids = typeof body.pids === 'number' ? String(body.pids) : text('pids', body.pids, 16);
    if (viaStep(() => parsePids(pids, '"pids"')) > MAX_PIDS) throw new ApiError(400, `"pids" is more than ${MAX_PIDS}`);
    req.pids = pids;
  }
  return req;
}

/** POST /jails/ID/exec: {"cmd": [...]}. */
export function checkExecRequest(body: Record<string, unknown>): { cmd: string[] } {
  const unknown = Object.keys(body).filter((k) => k !== 'cmd');
  if (unknown.length) throw new ApiError(400, `unknown field "${unknown[0]}"; the only field is cmd`);
  return { cmd: checkArgv('cmd', body.cmd) };
}

/** The seed's first version: GET /run?rootfs=NAME&hostname=H&cmd=PROGRAM, as the text describes its wocker. */
export function checkRunQuery(q: URLSearchParams): JailRequest {
  const known = ['rootfs', 'hostname', 'cmd'];
  const unknown = [...q.keys()].find((k) => !known.includes(k));
  if (unknown) throw new ApiError(400, `unknown parameter "${unknown}"; the parameters are rootfs, hostname and cmd`);
  const cmd = q.getAll('cmd');
  if (!cmd.length) throw new ApiError(400, 'cmd is missing: GET /run?rootfs=busybox&hostname=hello&cmd=/bin/sh&cmd=-c&cmd=…');
  return checkJailRequest({ image: q.get('rootfs') ?? 'busybox', hostname: q.get('hostname') ?? 'jail', cmd });
}
