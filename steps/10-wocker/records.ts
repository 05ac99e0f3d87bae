// What the daemon knows, it keeps on disk, not in memory: one directory per
// jail under $JAIL_HOME/run/wocker/jails/ID, written by the jail's shim (its
// launcher, like containerd-shim) and read by the daemon at every request.
// So a daemon killed with SIGKILL and started again knows exactly what the
// old one knew: nothing is started twice, nothing is orphaned.
//   request.json   what POST /jails asked for (checked)
//   state.json     the shim's account: starting, running (init pid, address) or exited (exit code)
//   log            the jail's stdout and stderr
//   shim.sock      the shim's socket: exec, for as long as the jail runs
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processStart } from '../../lib/proc.ts';
import { ensureDir, runDir } from '../../lib/state.ts';
import { JAIL_ID, type JailRequest } from './api.ts';

export const wockerDir = (): string => join(runDir(), 'wocker');
export const jailsDir = (): string => join(wockerDir(), 'jails');
export const recordDir = (id: string): string => join(jailsDir(), id);
export const logPath = (id: string): string => join(recordDir(id), 'log');
export const shimSocket = (id: string): string => join(recordDir(id), 'shim.sock');

export interface ShimState {
  status: 'starting' | 'running' | 'exited';
  /** The shim (the jail's launcher) and its start time: a PID alone can be reused. */
  shimPid: number;
  shimStart: number;
  initPid?: number;
  ip?: string;
  exitCode?: number;
  error?: string;
}

/** A jail as GET /jails shows it. */
export interface JailView {
  id: string;
  image: string;
  hostname: string;
  cmd: string[];
  state: 'starting' | 'running' | 'exited';
  exitCode: number | null;
  pid: number | null;
  ip: string | null;
  created: string;
  error?: string;
}

/** A jail's id: 12 random hex digits. */
export const newJailId = (): string => randomBytes(6).toString('hex');

/** A new jail's directory with its request (`id`: the one a pool slot was started for). */
export function createRecord(req: JailRequest, id = newJailId()): string {
  // only the jails' dir is private: a recursive mkdir with a mode would make $JAIL_HOME/run 0700 too,
  // and a user-namespaced jail's root could no longer reach what step 05 binds from there (resolv.conf)
  ensureDir(wockerDir());
  mkdirSync(jailsDir(), { recursive: true, mode: 0o700 });
  mkdirSync(recordDir(id), { mode: 0o700 });
  writeJson(join(recordDir(id), 'request.json'), { ...req, created: new Date().toISOString() });
  return id;
}

/** Written whole or not at all: a reader never sees half a state. */
export function writeJson(path: string, value: unknown): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(value) + '\n', { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export const readRequest = (id: string) => readJson<JailRequest & { created: string }>(join(recordDir(id), 'request.json'));
export const readState = (id: string) => readJson<ShimState>(join(recordDir(id), 'state.json'));
export const writeState = (id: string, state: ShimState): void => writeJson(join(recordDir(id), 'state.json'), state);

/** The shim still runs (same PID, same start time): then so may the jail. */
export const shimAlive = (s: ShimState | undefined): boolean => !!s && s.shimPid > 0 && processStart(s.shimPid) === s.shimStart;

export function listIds(): string[] {
  try {
    return readdirSync(jailsDir()).filter((d) => JAIL_ID.test(d) && existsSync(join(recordDir(d), 'request.json'))).sort();
  } catch {
    return [];
  }
}

/** What the record says, corrected by what is true: a shim that died without writing "exited" was killed. */
export function viewOf(id: string): JailView | undefined {
  const req = readRequest(id);
  if (!req) return undefined;
  const s = readState(id);
  let state: JailView['state'] = s?.status ?? 'starting';
  let exitCode = s?.exitCode ?? null;
  if (state !== 'exited' && s && !shimAlive(s)) {
    state = 'exited';
    exitCode ??= 137; // killed with its launcher (SIGKILL): the kernel took the jail down with it
  }
  return {
    id,
    image: req.image,
    hostname: req.hostname,
    cmd: req.cmd,
    state,
    exitCode: state === 'exited' ? exitCode : null,
    pid: state === 'running' ? (s?.initPid ?? null) : null,
    ip: state === 'running' ? (s?.ip ?? null) : null,
    created: req.created,
    ...(s?.error ? { error: s.error } : {}),
  };
}

export function removeRecord(id: string): void {
  rmSync(recordDir(id), { recursive: true, force: true });
}
