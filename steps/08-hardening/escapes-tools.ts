// What the escape attempts share: errno names, opening for writing without
// writing, scratch mounts that never touch the rootfs, and a way to run one
// of the rootfs's programs and read what it printed. All of it runs inside
// the jail, in PID 1's main thread, where the locks apply.
import { closeSync, constants, mkdirSync, openSync, readFileSync, readSync, rmdirSync } from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { mount, pipe, shellStatus, spawn, SyscallError, umount2, waitpid, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID } from '../../lib/libc.ts';
import type { EscapeResult } from './escapes.ts';

/** libuv's messages ("operation not permitted") by errno name, for tools' stderr. */
const errnoMessages = [...getSystemErrorMap()].map(([, [code, message]]) => [message.toLowerCase(), code] as const);
/** The key-store errnos, which Node's table lacks (asm-generic/errno.h). */
const KEY_ERRNOS: Record<number, string> = { 126: 'ENOKEY', 127: 'EKEYEXPIRED', 128: 'EKEYREVOKED', 129: 'EKEYREJECTED' };

/** The errno name of a Node fs error or a SyscallError (EPERM, EROFS …); undefined for other errors. */
export function errnoOf(err: unknown): string | undefined {
  if (err instanceof SyscallError) return KEY_ERRNOS[err.errno] ?? err.code;
  const code = (err as NodeJS.ErrnoException)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** The result of an attempt the kernel refused. */
export function failed(name: string, err: unknown, doing?: string): EscapeResult {
  const error = errnoOf(err);
  let message = (err as Error)?.message ?? String(err);
  if (err instanceof SyscallError && KEY_ERRNOS[err.errno]) message = `${err.call}: ${KEY_ERRNOS[err.errno]}`;
  return { name, out: false, evidence: `${doing ? doing + ': ' : ''}${message}`, error: error ?? 'error' };
}

/** A tool's "…: Operation not permitted" back to its errno name (EPERM). */
export function errnoInMessage(text: string): string | undefined {
  const lower = text.toLowerCase();
  return errnoMessages.find(([message]) => lower.includes(message))?.[1];
}

/** Closes an fd the attempt opened; never lets a close hide the result. */
export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    closeSync(fd);
  } catch {}
}

/**
 * Runs a program of the jail's rootfs (after pivot_root the host's are gone)
 * and waits for it: its exit status (128+N for a signal, 159 = SIGSYS, what a
 * seccomp kill looks like) and its output. The child inherits the calling
 * thread's locks, so this is run from the main thread.
 */
export function runInJail(path: string, argv: string[]): { status: number; output: string } {
  const [readEnd, writeEnd] = pipe();
  let pid: number;
  try {
    // the child keeps our stdin, and writes to the pipe
    pid = spawn(path, argv, ['PATH=/bin:/sbin:/usr/bin:/usr/sbin'], { stdio: [0, writeEnd, writeEnd] });
  } catch (err) {
    closeSync(readEnd);
    throw err;
  } finally {
    closeSync(writeEnd);
  }
  let output = '';
  const buf = Buffer.alloc(4096);
  try {
    for (let n; (n = readSync(readEnd, buf)) > 0; ) output += buf.toString('utf8', 0, n);
  } finally {
    closeSync(readEnd);
  }
  const [, raw] = waitpid(pid, 0);
  return { status: shellStatus(raw), output: output.trim() };
}

/**
 * Opens a kernel setting for writing and closes it again: the open is the
 * proof (the kernel checks every permission at open), a write would be the
 * damage. O_WRONLY alone — no O_TRUNC, no O_CREAT — so the file is untouched.
 */
export function openForWriting(name: string, path: string, showValue = true): EscapeResult {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY);
  } catch (err) {
    return failed(name, err, `open ${path} for writing`);
  }
  closeQuietly(fd);
  return { name, out: true, evidence: `opened ${path} for writing${showValue ? ` (it holds ${currentValue(path)})` : ''}; closed, nothing written` };
}

function currentValue(path: string): string {
  try {
    const v = readFileSync(path, 'utf8').trim();
    return JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v);
  } catch (err) {
    return `? (${errnoOf(err) ?? 'unreadable'})`;
  }
}

/**
 * A directory of the jail's own for a mount point or a device node: under
 * /dev, the jail's tmpfs, which vanishes with the jail — never the rootfs,
 * which is the host's disk.
 */
export function scratchDir(what: string): string {
  const dir = `/dev/baj-lab-${what}`;
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** Mounts a filesystem on a scratch directory, runs `body` on it, and takes both away again, whatever happens. */
export function withFreshMount(name: string, fstype: string, data: string | null, body: (dir: string) => EscapeResult): EscapeResult {
  const dir = scratchDir(fstype);
  try {
    try {
      mount(fstype, dir, fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC, data);
    } catch (err) {
      return failed(name, err, `mount -t ${fstype}${data ? ` -o ${data}` : ''}`);
    }
    try {
      return body(dir);
    } finally {
      umount2(dir, MNT_DETACH);
    }
  } finally {
    rmdirSync(dir);
  }
}
