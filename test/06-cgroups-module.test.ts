// Step 06's modules, proven against the real kernel, for what only a module
// test can show: the writes and their twins, removal and clean-up, the
// devices rules (parsing, bad input and detection need no root: they are in
// 06-cgroups-units.test.ts). The limits themselves
// (OOM kill, fork bomb, throttling, cpuset, io) are proven from inside real
// jails in 06-cgroups.test.ts, not here.
// A stand-in plays the jail's init: a shell that blocks on `read` until it is
// in the cgroup, then runs the target — exactly as the launcher's init waits
// for every hook's attach(), so the target never runs unlimited.
//   node --import tsx test/06-cgroups-module.test.ts -c=false
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as assert from 'uvu/assert';
import { CleanupStack } from '../lib/cleanup.ts';
import { JailError } from '../lib/errors.ts';
import { cmdline, listPids, processStart } from '../lib/proc.ts';
import type { JailSpec } from '../lib/spec.ts';
import { PREFIX } from '../lib/state.ts';
import { WORKSHOP_CGROUP } from '../steps/06-cgroups/cgroupfs.ts';
import { cgroupHook } from '../steps/06-cgroups/cgroups.ts';
import { cgroupPaths, detectCgroups } from '../steps/06-cgroups/hierarchy.ts';
import { MINIMAL_DEVICE_RULES, type Limits } from '../steps/06-cgroups/limits.ts';
import { cleanCgroups } from '../steps/06-cgroups/removal.ts';
import { cgroupStats } from '../steps/06-cgroups/usage.ts';
import { assertHostUnchanged, hostState, isRoot, rootSuite, waitFor, type HostState } from './helpers.ts';

const MiB = 2 ** 20;
let serial = 0;
const jailName = () => `${PREFIX}-cg${process.pid}-${++serial}`;
const specFor = (name: string): JailSpec => ({ name, rootfs: '/', namespaces: [], command: ['true'], env: {}, pivot: false, binds: [] });
const tree = detectCgroups();

// ---------------------------------------------------------------------------
// The real thing: needs root.

const test = rootSuite('06 cgroups: the hook on the real kernel');
let before: HostState;
test.before.each(() => {
  before = hostState();
});
test.after.each(async () => {
  await assertHostUnchanged(before);
});

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A process that blocks until release(), then runs `script`: the init that waits for attach(). */
function standIn(script: string) {
  const child = spawn('/bin/sh', ['-c', `read go; ${script}`], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  // 'close' waits for stdout too, which the target's children may hold; 'exit' is the stand-in alone.
  const done = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    pid: child.pid!,
    done,
    release() {
      child.stdin.end('go\n');
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
type StandIn = ReturnType<typeof standIn>;

/**
 * prepare -> stand-in -> attach -> body -> report -> unwind, as the launcher
 * does it. Returns what the hook showed the learner, and checks that no
 * directory of the jail's cgroup is left in any hierarchy.
 */
async function inJail(limits: Limits, script: string, body: (jail: StandIn, name: string) => Promise<void>): Promise<string> {
  const name = jailName();
  const spec = specFor(name);
  const hook = cgroupHook(limits);
  const cleanup = new CleanupStack();
  let shown = '';
  try {
    shown = await captureStderr(async () => {
      await hook.prepare!(spec, cleanup);
      const jail = standIn(script);
      cleanup.defer('stop the stand-in', () => jail.stop());
      await hook.attach!(spec, jail.pid, cleanup);
      await body(jail, name);
      await hook.report!(spec);
    });
  } finally {
    await cleanup.unwind();
  }
  assert.equal(cgroupPaths(name), [], 'the cgroup is gone after the jail');
  return shown;
}

/** What `body` shows the learner on stderr (even under JAIL_QUIET=1, which silences the rest), without colour. */
async function captureStderr(body: () => Promise<void>): Promise<string> {
  const write = process.stderr.write;
  const quiet = process.env.JAIL_QUIET;
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => ((text += String(chunk)), true)) as typeof process.stderr.write;
  delete process.env.JAIL_QUIET;
  try {
    await body();
  } finally {
    process.stderr.write = write;
    if (quiet !== undefined) process.env.JAIL_QUIET = quiet;
    if (quiet !== '1') process.stderr.write(text);
  }
  return text.replace(/\x1b\[[0-9;]*m/g, '');
}

/** Where a control file of the jail is on this host: the one v2 tree, or the controller's v1 tree. */
const fileOf = (name: string, controller: 'cpu' | 'memory' | 'pids' | 'devices', file: string) => `${tree.roots[controller]}/${WORKSHOP_CGROUP}/${name}/${file}`;
const read = (path: string) => readFileSync(path, 'utf8').trim();

test("each limit is one line in one file, and the init is in every controller's cgroup before its target runs", async () => {
  await inJail({ cpus: 0.5, memory: 64 * MiB, pids: 100 }, 'cat /proc/self/cgroup', async (jail, name) => {
    if (tree.version === 2) {
      assert.is(read(fileOf(name, 'cpu', 'cpu.max')), '50000 100000');
      assert.is(read(fileOf(name, 'memory', 'memory.max')), String(64 * MiB));
    } else {
      assert.is(read(fileOf(name, 'cpu', 'cpu.cfs_quota_us')), '50000');
      assert.is(read(fileOf(name, 'cpu', 'cpu.cfs_period_us')), '100000');
      assert.is(read(fileOf(name, 'memory', 'memory.limit_in_bytes')), String(64 * MiB));
    }
    assert.is(read(fileOf(name, 'pids', 'pids.max')), '100');
    jail.release();
    const out = await jail.done;
    assert.is(out.code, 0, out.stderr);
    // the target's first act is to read its own cgroups: it was born in them
    const lines = out.stdout.trim().split('\n');
    const inJailCgroup = (controller: string) => lines.some((l) => l.endsWith(`/${WORKSHOP_CGROUP}/${name}`) && (tree.version === 2 ? l.startsWith('0::') : l.split(':')[1]!.split(',').includes(controller)));
    for (const c of ['cpu', 'memory', 'pids']) assert.ok(inJailCgroup(c), `in the ${c} cgroup:\n${out.stdout}`);
  });
});


/** Registers a test, or, when `missing` names what this host lacks, registers it as skipped and says why. */
function testIf(missing: string | false, name: string, fn: () => Promise<void>): void {
  if (!missing) return test(name, fn);
  if (isRoot) console.log(`  skipped: ${name} — ${missing}`); // without root the suite has said why
  test.skip(name, fn);
}

test('--memory forbids swap beyond the limit, or says there is no swap to forbid', async () => {
  const swapFile = tree.version === 2 ? 'memory.swap.max' : 'memory.memsw.limit_in_bytes';
  let present = false;
  const shown = await inJail({ memory: 64 * MiB }, 'true', async (jail, name) => {
    present = existsSync(fileOf(name, 'memory', swapFile));
    if (present) assert.is(read(fileOf(name, 'memory', swapFile)), tree.version === 2 ? '0' : String(64 * MiB));
    jail.release();
    await jail.done;
  });
  if (present) assert.match(shown, new RegExp(`\\$ echo \\d+ > \\S+/${swapFile.replace(/\./g, '\\.')}`));
  else assert.match(shown, /this host has no swap|swap accounting is off/);
});

test("each write is shown as its shell command, with the other cgroup version's twin beside it", async () => {
  let name = '';
  const shown = await inJail({ cpus: 0.5, pids: 32 }, 'true', async (jail, n) => {
    name = n;
    jail.release();
    await jail.done;
  });
  const v2 = `/sys/fs/cgroup/${WORKSHOP_CGROUP}/${name}`;
  if (tree.version === 2) {
    assert.ok(shown.includes(`$ echo "50000 100000" > ${v2}/cpu.max`), shown);
    assert.ok(shown.includes(`cgroup v1: echo 100000 > /sys/fs/cgroup/cpu/${WORKSHOP_CGROUP}/${name}/cpu.cfs_period_us`), shown);
    assert.ok(shown.includes(`cgroup v1: echo 50000 > /sys/fs/cgroup/cpu/${WORKSHOP_CGROUP}/${name}/cpu.cfs_quota_us`), shown);
    assert.ok(shown.includes(`$ echo 32 > ${v2}/pids.max`), shown);
    assert.ok(shown.includes(`cgroup v1: echo 32 > /sys/fs/cgroup/pids/${WORKSHOP_CGROUP}/${name}/pids.max`), shown);
    assert.match(shown, new RegExp(`cgroup v1: echo \\d+ > /sys/fs/cgroup/\\{cpu,memory,pids\\}/${WORKSHOP_CGROUP}/${name}/cgroup.procs`));
  } else {
    assert.ok(shown.includes(`$ echo 100000 > ${fileOf(name, 'cpu', 'cpu.cfs_period_us')}`), shown);
    assert.ok(shown.includes(`$ echo 50000 > ${fileOf(name, 'cpu', 'cpu.cfs_quota_us')}`), shown);
    assert.ok(shown.includes(`cgroup v2: echo "50000 100000" > ${v2}/cpu.max`), shown);
    assert.ok(shown.includes(`$ echo 32 > ${fileOf(name, 'pids', 'pids.max')}`), shown);
    assert.ok(shown.includes(`cgroup v2: echo 32 > ${v2}/pids.max`), shown);
    assert.match(shown, new RegExp(`cgroup v2: echo \\d+ > ${v2}/cgroup.procs`));
  }
});

/** Processes anywhere on the host whose command line carries `token`. */
const processesWith = (token: string): number[] => listPids().filter((pid) => cmdline(pid)?.join(' ').includes(token));

testIf(!existsSync('/usr/bin/perl') && 'no perl on this host', 'a jail still forking when it ends is killed whole: nothing outlives its cgroup', async () => {
  // dash gives up when fork() fails; perl's `fork while 1` never does: every
  // process keeps forking at pids.max, the worst case for the undo's kill.
  const token = `baj-bomb2-${process.pid}`;
  let undoMs = 0;
  await inJail({ pids: 48 }, `exec perl -e 'fork while 1' ${token}`, async (jail, name) => {
    jail.release();
    await waitFor('the bomb at pids.max', () => cgroupStats(name).pids === 48 && cgroupStats(name).forksRefused > 1000, 20_000);
    undoMs = Date.now();
  });
  undoMs = Date.now() - undoMs;
  console.log(`  (48 processes forking as fast as they can: killed and removed in ${undoMs} ms)`);
  assert.equal(processesWith(token), [], 'no bomb process is left');
});

/** Jails of someone else on this host (another test run, a learner's jail): not ours to remove. */
function othersJails(): string[] {
  const parent = `${tree.roots.memory}/${WORKSHOP_CGROUP}`;
  return existsSync(parent) ? readdirSync(parent).filter((d) => existsSync(`${parent}/${d}/cgroup.procs`) && !d.startsWith(`${PREFIX}-cg${process.pid}-`)) : [];
}
const othersRunning = othersJails().length > 0 && `other jails are running (${othersJails().join(' ')})`;

testIf(othersRunning, 'two jails share the workshop parent; it goes with the last one', async () => {
  const parent = `${tree.roots.memory}/${WORKSHOP_CGROUP}`;
  await inJail({ pids: 10 }, 'true', async (outer) => {
    await inJail({ pids: 10 }, 'true', async (inner) => {
      inner.release();
      await inner.done;
    });
    assert.ok(existsSync(parent), 'the first jail still has its parent');
    outer.release();
    await outer.done;
  });
  assert.not.ok(existsSync(parent), 'the parent went with the last jail');
});

test('a limit the kernel refuses unwinds what was made: no cgroup is left', async () => {
  const name = jailName();
  const cleanup = new CleanupStack();
  // 0:0 is no block device; the kernel refuses the io limit after the cgroup was made.
  const hook = cgroupHook({ memory: 64 * MiB, ioWriteBps: [{ dev: '0:0', bytes: MiB }] });
  try {
    await hook.prepare!(specFor(name), cleanup);
    assert.unreachable('the io limit on 0:0 must fail');
  } catch (err) {
    assert.instance(err, JailError);
    assert.match((err as Error).message, /could not write '0:0 1048576'|could not write '0:0 wbps=1048576'/);
  } finally {
    await cleanup.unwind();
  }
  assert.equal(cgroupPaths(name), []);
});

test('cleanCgroups removes what a killed run left in every hierarchy, kills its processes, and is idempotent', async () => {
  const name = jailName();
  const lost = new CleanupStack(); // a run killed with SIGKILL never unwinds this
  const hook = cgroupHook({ pids: 20, devices: MINIMAL_DEVICE_RULES }); // devices: one more hierarchy on v1
  await hook.prepare!(specFor(name), lost);
  const jail = standIn('sleep 1000 & sleep 1000 & wait');
  await hook.attach!(specFor(name), jail.pid, lost);
  jail.release();
  await waitFor('the leftover runs', () => cgroupStats(name).pids === 3);
  const left = cgroupPaths(name);
  const procs = read(fileOf(name, 'pids', 'cgroup.procs')).split('\n').map((pid) => [Number(pid), processStart(Number(pid))] as const);
  // only this run's jails: other jails on this host (a learner's, another test run's) are not ours to end
  const ours = (jail: string) => jail.startsWith(`${PREFIX}-cg${process.pid}-`);
  const removed = await cleanCgroups(ours);
  for (const dir of left) assert.ok(removed.includes(dir), `${dir} removed: ${removed.join(' ')}`);
  assert.equal(cgroupPaths(name), []);
  const out = await jail.done;
  assert.is(out.signal, 'SIGKILL', 'the leftover process was killed');
  // killed processes are zombies until their reaper (the host's PID 1, for the orphans) collects them
  const alive = () => procs.filter(([pid, start]) => processStart(pid) === start);
  await waitFor(`the leftovers to be gone: ${alive().map(([pid]) => pid).join(' ')}`, () => alive().length === 0, 5000);
  assert.equal((await cleanCgroups(ours)).filter((dir) => dir.includes(`/${PREFIX}-`)), [], 'a second clean finds nothing');
});

// ---------------------------------------------------------------------------
// Devices: the v1 devices controller, or on v2 an explanation.

const noV1Devices = (tree.version !== 1 || !tree.roots.devices) && `no cgroup v1 devices controller (this host: ${tree.mode})`;

testIf(noV1Devices || (!existsSync('/dev/kmsg') && 'no /dev/kmsg'), 'under MINIMAL_DEVICE_RULES even root cannot open /dev/kmsg (1:11) or mknod it, while /dev/null opens and mknods', async () => {
  // Outside the cgroup root opens /dev/kmsg read-only (harmless: nothing is
  // read): the refusal inside is the cgroup's, not the file mode's.
  closeSync(openSync('/dev/kmsg', 'r'));
  const dir = mkdtempSync('/tmp/baj-devices-');
  const tryOpen = (path: string) => `if dd if=${path} of=/dev/null count=0 status=none; then echo "open ${path}: ok"; fi`;
  const tryMknod = (node: string, major: number, minor: number) => `if mknod ${dir}/${node} c ${major} ${minor}; then echo "mknod ${major}:${minor}: ok"; fi`;
  const script = [tryOpen('/dev/null'), tryOpen('/dev/kmsg'), tryMknod('null', 1, 3), tryMknod('kmsg', 1, 11), 'id -u'].join('; ');
  let leaf = '';
  try {
    const shown = await inJail({ devices: MINIMAL_DEVICE_RULES }, script, async (jail, name) => {
      leaf = `${tree.roots.devices}/${WORKSHOP_CGROUP}/${name}`;
      assert.ok(cgroupPaths(name).includes(leaf), 'the jail has a leaf in the devices hierarchy');
      assert.equal(read(`${leaf}/devices.list`).split('\n').sort(), [...MINIMAL_DEVICE_RULES].sort());
      jail.release();
      const out = await jail.done;
      assert.is(out.stdout, 'open /dev/null: ok\nmknod 1:3: ok\n0\n', out.stderr);
      assert.match(out.stderr, /failed to open '\/dev\/kmsg': Operation not permitted/);
      assert.match(out.stderr, /mknod: \S+\/kmsg: Operation not permitted/);
    });
    // deny all first, then each allow, all before the init joins
    const at = (text: string) => shown.indexOf(text);
    assert.ok(at(`$ echo a > ${leaf}/devices.deny`) >= 0, shown);
    assert.ok(at(`$ echo a > ${leaf}/devices.deny`) < at(`$ echo "c 1:3 rwm" > ${leaf}/devices.allow`), 'deny before allow');
    for (const rule of MINIMAL_DEVICE_RULES) assert.ok(at(`$ echo "${rule}" > ${leaf}/devices.allow`) < at(`> ${leaf}/cgroup.procs`), `${rule} before the join`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

testIf(tree.version !== 2 && `not a pure cgroup v2 host (this host: ${tree.mode})`, 'on cgroup v2 a devices limit is explained once (BPF_CGROUP_DEVICE), nothing is written, and the jail runs', async () => {
  const shown = await inJail({ devices: MINIMAL_DEVICE_RULES }, 'true', async (jail) => {
    jail.release();
    assert.is((await jail.done).code, 0);
  });
  assert.is(shown.split('BPF_CGROUP_DEVICE').length - 1, 1, shown);
  assert.not.match(shown, /\$ echo .*devices\./);
});

test.run();
