// What every benchmark needs: a scratch directory that is gone afterwards
// (also after Ctrl-C), wall-clock timings from hyperfine or from a Node
// loop, and one table of medians. Medians, not means: the machine may be
// busy with other work, and a median ignores the slow outliers that busy
// periods cause.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { JailError } from '../lib/errors.ts';
import { which } from '../lib/preflight.ts';

/**
 * A temp dir removed when the process exits, however it exits (but SIGKILL).
 * `undo` runs first, for what lives in the dir but is not a file (a runc container).
 */
export function scratchDir(undo: () => void = () => {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'baj-bench-'));
  process.once('exit', () => {
    try {
      undo();
    } catch {}
    // a child killed by the same Ctrl-C (cp -a of a Debian tree) may still be writing in it: retry
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 50 });
    } catch (err) {
      process.stderr.write(`could not remove ${dir}: ${(err as Error).message}\n`);
    }
  });
  // process.exit() from a signal handler runs the 'exit' listeners above
  process.once('SIGINT', () => process.exit(130)).once('SIGTERM', () => process.exit(143));
  return dir;
}

/** Ctrl-C reaches the whole process group: a child that died of it means the user wants out, quietly. */
export function exitIfInterrupted(signal: NodeJS.Signals | null): void {
  if (signal === 'SIGINT' || signal === 'SIGTERM') process.exit(signal === 'SIGINT' ? 130 : 143);
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Milliseconds per call of an async function, after `warmup` untimed calls; `prepare` runs untimed before each. */
export async function timeCalls(fn: () => Promise<unknown>, runs: number, opts: { warmup?: number; prepare?: () => void } = {}): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < (opts.warmup ?? 1) + runs; i++) {
    opts.prepare?.();
    const t0 = performance.now();
    await fn();
    if (i >= (opts.warmup ?? 1)) times.push(performance.now() - t0);
  }
  return times;
}

export interface Command {
  name: string;
  argv: string[];
}

/**
 * Milliseconds per run of each command, from start to exit. hyperfine runs
 * them (no shell in between: -N); without hyperfine, a plain spawnSync loop.
 * Every command must succeed, or the whole measurement stops.
 */
export function timeCommands(commands: Command[], runs: number, opts: { warmup?: number; cwd?: string; env?: NodeJS.ProcessEnv; scratch: string; progressTo?: 'stdout' | 'stderr' }): Map<string, number[]> {
  const warmup = opts.warmup ?? 1;
  const env = { ...process.env, ...opts.env };
  const result = new Map<string, number[]>();
  if (!which('hyperfine')) {
    for (const c of commands) {
      const times: number[] = [];
      for (let i = 0; i < warmup + runs; i++) {
        const t0 = performance.now();
        const r = spawnSync(c.argv[0]!, c.argv.slice(1), { cwd: opts.cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
        exitIfInterrupted(r.signal);
        if (r.status !== 0) throw new JailError(`${c.name} failed (exit ${r.status}): ${String(r.stderr).trim()}`);
        if (i >= warmup) times.push(performance.now() - t0);
      }
      result.set(c.name, times);
    }
    return result;
  }
  const json = join(opts.scratch, 'hyperfine.json');
  const args = ['-N', '--style', 'basic', '--warmup', String(warmup), '--runs', String(runs), '--export-json', json];
  for (const c of commands) args.push('--command-name', c.name, c.argv.join(' '));
  // hyperfine's progress goes to our stdout, or to stderr when stdout is kept for a report (bench/claims.ts)
  const r = spawnSync('hyperfine', args, { cwd: opts.cwd, env, stdio: ['ignore', opts.progressTo === 'stderr' ? 2 : 'inherit', 'inherit'] });
  exitIfInterrupted(r.signal);
  if (r.status !== 0) throw new JailError(`hyperfine failed (exit ${r.status})`, 'run the failing command by hand to see its error');
  const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { command: string; times: number[] }[] };
  for (const res of report.results) result.set(res.command, res.times.map((s) => s * 1000));
  return result;
}

/** An OCI bundle for runc: `runc spec`'s defaults, no terminal, /bin/true, our rootfs. */
export function makeRuncBundle(bundle: string, rootfs: string): void {
  mkdirSync(bundle);
  const r = spawnSync('runc', ['spec', '--bundle', bundle], { encoding: 'utf8' });
  if (r.status !== 0) throw new JailError(`runc spec failed: ${r.stderr.trim()}`);
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
  config.process.terminal = false;
  config.process.args = ['/bin/true'];
  config.root = { path: rootfs, readonly: true }; // runc bind-mounts it, as the jail does
  config.hostname = 'jail';
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(config, null, 2));
}

/**
 * What a learner could start /bin/true in `rootfs` with instead of a jail:
 * unshare, and bwrap and runc where installed (a line says how to get the
 * missing ones). runc's bundle is made in `dir`/runc; its container is
 * `runc.id`, its state under `runc.state` (delete it there if interrupted).
 */
export function rivalCommands(rootfs: string, dir: string, runc: { id: string; state: string }, say: (line: string) => void = console.log): Command[] {
  const commands: Command[] = [{ name: 'unshare --root', argv: ['unshare', '--fork', '--pid', '--mount', '--uts', '--ipc', '--net', '--root', rootfs, '/bin/true'] }];
  if (which('bwrap')) {
    // bwrap's own /dev is the same minimal one; it cannot mount sysfs, so /sys is the host's, read-only
    commands.push({ name: 'bwrap', argv: ['bwrap', '--unshare-uts', '--unshare-pid', '--unshare-ipc', '--unshare-net', '--bind', rootfs, '/', '--proc', '/proc', '--dev', '/dev', '--ro-bind', '/sys', '/sys', '--hostname', 'jail', '/bin/true'] });
  } else say('(no bwrap: sudo apt-get install bubblewrap)');
  if (which('runc')) {
    makeRuncBundle(join(dir, 'runc'), rootfs);
    commands.push({ name: 'runc run', argv: ['runc', '--root', runc.state, 'run', '--bundle', join(dir, 'runc'), runc.id] });
  } else say('(no runc: sudo apt-get install runc)');
  return commands;
}

/** Appends b's timings to a's, per name: rounds of measurements pooled into one sample. */
export function pool(into: Map<string, number[]>, from: Map<string, number[]>): void {
  for (const [k, v] of from) into.set(k, [...(into.get(k) ?? []), ...v]);
}

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

/** One line per measurement: median, spread (p25-p75), runs, and the ratio to each baseline. */
export function printTable(title: string, rows: Map<string, number[]>, baselines: string[] = []): void {
  const width = Math.max(...[...rows.keys()].map((k) => k.length));
  console.log(`\n${title}`);
  const head = `  ${'what'.padEnd(width)}  ${'median'.padStart(9)}  ${'p25-p75'.padStart(19)}  runs` + baselines.map((b) => `  ${('× ' + b).padStart(12)}`).join('');
  console.log(head);
  for (const [name, times] of rows) {
    const s = [...times].sort((a, b) => a - b);
    const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
    const ratios = baselines.map((b) => `  ${(median(times) / median(rows.get(b)!)).toFixed(2).padStart(12)}`).join('');
    console.log(`  ${name.padEnd(width)}  ${fmt(median(times)).padStart(9)}  ${`${fmt(q(0.25))}-${fmt(q(0.75))}`.padStart(19)}  ${String(times.length).padStart(4)}${ratios}`);
  }
}
