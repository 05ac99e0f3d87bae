// What every check of `npm run claims` shares: the shape of a claim and of its
// verdict, the link to the lesson that proves it, and the context a check runs
// in — a private busybox rootfs, a scratch dir, a way to run a command (a jail
// of step 04 or 06, a tool on the host) and hear about Ctrl-C. Nothing here
// measures; the claims-*.ts files do, one group of claims each.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CleanupStack } from '../lib/cleanup.ts';
import { JailError } from '../lib/errors.ts';

export const repo = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');

/** shown: the text is right, and here is the measurement; corrected: partly right, or right once fixed; wrong: it is not so. */
export type Verdict = 'shown' | 'corrected' | 'wrong';

export interface Outcome {
  verdict: Verdict;
  /** The measured figure, one line. */
  figure: string;
  /** What else a reader must know to judge the figure (a caveat), one line. */
  note?: string;
  /** The start-up check's medians, for the chart (--svg), and the chart's last line of caption. */
  bars?: Bar[];
  chartCaption?: string;
}

export interface Bar {
  label: string;
  ms: number;
  /** The jail is drawn in the accent colour, the other tools in grey, VMs in blue. */
  kind: 'jail' | 'tool' | 'vm';
}

export interface Lesson {
  /** e.g. steps/04-pivot-root/README.md */
  path: string;
  /** The heading of the section, as written there. */
  heading?: string;
}

export interface Check {
  /** For --only. */
  name: string;
  /** The text's own words, quoted exactly from lesson-text.zh.md. */
  zh: string;
  en: string;
  /** Where the lesson proves (or corrects) it. */
  lesson: Lesson;
  run(ctx: Context): Promise<Outcome>;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Context {
  /** Aborted on Ctrl-C: stop soon, undo, and throw. */
  signal: AbortSignal;
  /** Undone at the end of the run (also on Ctrl-C), newest first. */
  cleanup: CleanupStack;
  /** A busybox rootfs of this run's own (built once, on first use): a test rebuilding the shared one cannot swap it under us. */
  rootfs(): Promise<string>;
  /** A fresh directory inside this run's scratch dir. */
  scratch(name: string): string;
  /** Progress, on stderr (stdout is the table's). */
  say(line: string): void;
}

export const lesson = (step: string, heading?: string): Lesson => ({ path: `steps/${step}/README.md`, heading });

/** GitHub's anchor for a heading: lower case, punctuation gone, each space a hyphen. */
export const slug = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');

export const lessonHref = (l: Lesson): string => (l.heading ? `${l.path}#${slug(l.heading)}` : l.path);

/** Every lesson link must point at a README and a heading that exist: a moved section is a bug here, found before measuring. */
export function checkLessonLinks(checks: Check[]): void {
  for (const c of checks) {
    const file = join(repo, c.lesson.path);
    if (!existsSync(file)) throw new JailError(`claim ${c.name}: ${c.lesson.path} does not exist`);
    if (!c.lesson.heading) continue;
    const headings = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => /^#{1,6} /.test(l))
      .map((l) => l.replace(/^#+ /, ''));
    if (!headings.includes(c.lesson.heading)) throw new JailError(`claim ${c.name}: ${c.lesson.path} has no heading "${c.lesson.heading}"`);
  }
}

/**
 * The quotes must be the text's own words. The text is not in this repo (the
 * seed's README says: learn from it, do not copy it); where a copy is at hand,
 * JAIL_LESSON_TEXT=PATH makes the run check every quote against it.
 */
export function checkQuotes(checks: Check[]): void {
  const path = process.env.JAIL_LESSON_TEXT;
  if (!path) return;
  const text = readFileSync(path, 'utf8');
  const missing = checks.filter((c) => !text.includes(c.zh));
  if (missing.length) throw new JailError(`not quoted exactly from ${path}: ${missing.map((c) => c.name).join(', ')}`);
}

// ---------------------------------------------------------------------------
// Running things

const children = new Set<ChildProcess>();

/** Ctrl-C reaches our children through the terminal; a SIGTERM to us alone is passed on here. */
export function stopChildren(sig: NodeJS.Signals): void {
  for (const c of children) c.kill(sig === 'SIGINT' ? 'SIGINT' : 'SIGTERM');
}

/**
 * Runs a command to its end, output captured; quiet steps (JAIL_QUIET=1)
 * unless env says otherwise. Never throws for a non-zero status: the caller
 * decides what it means.
 */
export function run(argv: string[], opts: { env?: Record<string, string>; onSpawn?: (child: ChildProcess) => void } = {}): Promise<RunResult> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: repo, env: { ...process.env, JAIL_QUIET: '1', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      children.delete(child);
      reject(new JailError(`cannot run ${argv[0]}: ${err.message}`));
    });
    child.on('close', (code, sig) => {
      children.delete(child);
      resolve({ status: code ?? 128 + (sig === 'SIGKILL' ? 9 : 15), stdout, stderr, ms: performance.now() - t0 });
    });
    opts.onSpawn?.(child);
  });
}

/** argv of a step, as `node bin/step.mjs N FLAGS… -- CMD…` (what `npm run step N` runs, without npm). */
export const stepArgv = (n: number, flags: string[], command: string[]): string[] => [process.execPath, 'bin/step.mjs', String(n), ...flags, '--', ...command];

/** Runs a command in a jail of step 04 on this run's rootfs; its stdout, or an error with its stderr. */
export async function inJail(ctx: Context, command: string[], flags: string[] = []): Promise<string> {
  const r = await run(stepArgv(4, ['--rootfs', await ctx.rootfs(), ...flags], command));
  if (r.status !== 0) throw new JailError(`the jail running ${command.join(' ')} exited with ${r.status}: ${r.stderr.trim().split('\n').pop()}`);
  return r.stdout;
}

/** Throws if Ctrl-C came: call between the parts of a long check. */
export function stillWanted(ctx: Context): void {
  if (ctx.signal.aborted) throw new JailError('interrupted');
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** Waits until `probe` gives a value (not undefined), or throws after timeoutMs. */
export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs: number, signal?: AbortSignal): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (signal?.aborted) throw new JailError('interrupted');
    if (Date.now() > end) throw new JailError(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------
// The run's scratch dir

/**
 * A temp dir that goes at the end of the run: through the cleanup stack, or —
 * when a bench helper exits the process on Ctrl-C (exitIfInterrupted) — in an
 * 'exit' listener. (bench/measure.ts's scratchDir would exit at once on Ctrl-C;
 * here jails run inside this process and must unwind first.)
 */
export function makeScratch(cleanup: CleanupStack): string {
  const dir = mkdtempSync(join(tmpdir(), 'baj-claims-'));
  const remove = () => rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 50 });
  process.once('exit', remove);
  cleanup.defer(`remove ${dir}`, () => {
    process.off('exit', remove);
    remove();
  });
  return dir;
}

export const subdir = (root: string, name: string): string => mkdtempSync(join(root, `${name}-`));

// ---------------------------------------------------------------------------
// Figures

export const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');
export const fmtMs = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`);
export const times = (x: number): string => `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}×`;

/** busybox `time` prints "real 0m 1.23s / user … / sys …"; in milliseconds. */
export function busyboxTime(stderr: string): { real: number; cpu: number } {
  const field = (name: string) => {
    const m = new RegExp(`${name}\\s+(\\d+)m\\s*([\\d.]+)s`).exec(stderr);
    if (!m) throw new JailError(`no "${name}" timing in: ${stderr.trim().slice(-200)}`);
    return (Number(m[1]) * 60 + Number(m[2])) * 1000;
  };
  return { real: field('real'), cpu: field('user') + field('sys') };
}
