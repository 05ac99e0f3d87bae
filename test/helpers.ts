// Shared by every test file: run a step the way a learner does, compare the
// host before and after, wait without sleeping blindly.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { suite, type Test } from 'uvu';
import { statusOf } from '../lib/errors.ts';
import { PREFIX } from '../lib/state.ts';

export const repo = fileURLToPath(new URL('..', import.meta.url));
export const isRoot = process.getuid?.() === 0;

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** A uvu suite that, without root, skips every test and says why once. */
export function rootSuite(name: string): Test {
  const s = suite(name);
  if (isRoot) return s;
  console.log(`${name}: needs root (namespaces, mounts, cgroups) — run: sudo npm test; skipped`);
  const skipping = ((title: string) => s.skip(title, () => {})) as unknown as Test;
  Object.assign(skipping, { skip: s.skip, only: s.only, before: () => {}, after: () => {}, run: s.run });
  (skipping as any).before.each = () => {};
  (skipping as any).after.each = () => {};
  return skipping;
}

/** argv of `npm run step N -- args…`, without npm: what the npm script runs. */
export const stepArgv = (step: number | string, ...args: string[]): string[] => [process.execPath, join(repo, 'bin/step.mjs'), String(step), ...args];

/** Runs `npm run step N -- args…` (without npm's banner) and collects its output. */
export function runStep(step: number | string, args: string[], opts: RunOptions = {}): Promise<Result> {
  return runArgv(stepArgv(step, ...args), opts);
}

type RunOptions = { env?: Record<string, string>; input?: string; timeoutMs?: number };

/** Runs a TypeScript file of the repo with node --import tsx. */
export function runNode(args: string[], opts: RunOptions = {}): Promise<Result> {
  return runArgv([process.execPath, '--import', 'tsx', ...args], opts);
}

function runArgv([cmd, ...args]: string[], opts: RunOptions): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd!, args, {
      cwd: repo,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out: ${args.join(' ')}\n${stderr}`));
    }, opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: statusOf(code, signal), stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export function sh(command: string): Result {
  const r = spawnSync('/bin/bash', ['-c', command], { encoding: 'utf8' });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** Polls until `probe` returns a truthy value, or fails after timeoutMs. */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// ---------------------------------------------------------------------------
// The host's state: what must be the same before and after every test.

export interface HostState {
  mounts: string[];
  links: string[];
  netns: string[];
  cgroups: string[];
  iptables: string[];
  ipForward: string;
  jailProcesses: string[];
}

const hostPidNs = () => readlinkSafe('/proc/self/ns/pid');
function readlinkSafe(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}

function cgroupDirs(): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 4) return;
    let entries: string[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e);
      if (e.startsWith(PREFIX) || e.includes('build-a-jail')) found.push(p);
      walk(p, depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);
  return found.sort();
}

/** Processes in a PID namespace other than the host's: jails that are still alive. */
function jailProcesses(): string[] {
  const mine = hostPidNs();
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    const ns = readlinkSafe(`/proc/${pid}/ns/pid`);
    if (ns && ns !== mine) {
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      } catch {}
      out.push(`${pid} ${cmd}`);
    }
  }
  return out;
}

export function hostState(): HostState {
  const lines = (cmd: string) => sh(cmd).stdout.split('\n').filter(Boolean);
  return {
    mounts: readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ').slice(3, 5).join(' ')) // root and mount point
      .sort(),
    links: lines("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1").sort(),
    netns: existsSync('/run/netns') ? readdirSync('/run/netns').sort() : [],
    cgroups: cgroupDirs(),
    iptables: lines("{ iptables-save 2>/dev/null; } | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'").sort(),
    ipForward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(),
    jailProcesses: jailProcesses(),
  };
}

/** Asserts that nothing the test made is still on the host (waiting briefly for the kernel to tear down). */
export async function assertHostUnchanged(before: HostState, context = ''): Promise<void> {
  let after = hostState();
  const same = () => JSON.stringify(after) === JSON.stringify(before);
  const deadline = Date.now() + 3000;
  while (!same() && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    after = hostState();
  }
  for (const key of Object.keys(before) as (keyof HostState)[]) {
    const gone = before[key] instanceof Array ? (before[key] as string[]).filter((x) => !(after[key] as string[]).includes(x)) : [];
    const added = after[key] instanceof Array ? (after[key] as string[]).filter((x) => !(before[key] as string[]).includes(x)) : [];
    if (JSON.stringify(after[key]) !== JSON.stringify(before[key])) {
      // uvu does not print failures in hooks; say it here
      console.error(`\nhost ${key} changed ${context}: added ${JSON.stringify(added)}, gone ${JSON.stringify(gone)}${typeof before[key] === 'string' ? ` (${before[key]} -> ${after[key]})` : ''}`);
    }
    assert.equal(after[key], before[key], `host ${key} changed ${context}`);
  }
}

/**
 * The suite of a step that runs jails: needs root, builds the busybox rootfs
 * once, and checks after every test that the host is as it was before it.
 */
export function jailSuite(name: string, opts: { afterEach?: () => Promise<unknown> } = {}): Test {
  const test = rootSuite(name);
  let before: HostState;
  test.before(async () => {
    if (isRoot) assert.is((await runStep(1, [], { env: { JAIL_QUIET: '1' } })).code, 0, 'building the busybox rootfs');
  });
  test.before.each(() => {
    before = hostState();
  });
  test.after.each(async () => {
    await opts.afterEach?.();
    await assertHostUnchanged(before);
  });
  return test;
}
