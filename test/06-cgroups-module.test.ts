// Step 06's cgroup module, proven against the real kernel before a launcher
// exists. A stand-in plays the jail's init: a shell that blocks on `read`
// until it is in the cgroup, then runs the target — so the target never runs
// unlimited, exactly as the launcher's init waits for every hook's attach().
//   node --import tsx test/cgroups-module.check.ts
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseArgs } from '../lib/cli.ts';
import { CleanupStack } from '../lib/cleanup.ts';
import { JailError } from '../lib/errors.ts';
import type { JailSpec } from '../lib/spec.ts';
import { PREFIX } from '../lib/state.ts';
import {
  cgroupFlags,
  cgroupHook,
  cgroupPaths,
  cgroupStats,
  cleanCgroups,
  detectCgroups,
  limitsFromFlags,
  parseCpus,
  parseCpuset,
  parseDeviceRate,
  parsePids,
  parseRate,
  parseSize,
  WORKSHOP_CGROUP,
  type Limits,
} from '../steps/06-cgroups/cgroups.ts';
import { assertHostUnchanged, hostState, rootSuite, sh, waitFor, type HostState } from './helpers.ts';

const MiB = 2 ** 20;
let serial = 0;
const jailName = () => `${PREFIX}-cg${process.pid}-${++serial}`;
const specFor = (name: string): JailSpec => ({ name, rootfs: '/', namespaces: [], command: ['true'], env: {}, pivot: false, binds: [] });

// ---------------------------------------------------------------------------
// Units: no root needed.

const units = suite('06 cgroups: units');

units('sizes, rates, CPUs and pids take the units people type', () => {
  assert.is(parseSize('64M'), 64 * MiB);
  assert.is(parseSize('1.5G'), 1.5 * 1024 * MiB);
  assert.is(parseSize('512k'), 512 * 1024);
  assert.is(parseSize('1048576'), MiB);
  assert.is(parseSize('64MiB'), 64 * MiB);
  assert.is(parseSize('64mb'), 64 * MiB);
  assert.is(parseRate('10MB/s'), 10 * MiB);
  assert.is(parseRate('1M'), MiB);
  assert.is(parseRate('512k/s'), 512 * 1024);
  assert.is(parseCpus('0.5'), 0.5);
  assert.is(parseCpus('.2'), 0.2);
  assert.is(parseCpuset('0'), '0');
  assert.is(parseCpuset('0,1'), '0-1');
  assert.is(parseCpuset('0-1'), '0-1');
  assert.is(parsePids('64'), 64);
  assert.equal(parseDeviceRate('8:0:10MB/s'), { dev: '8:0', bytes: 10 * MiB });
});

units('a block device path becomes MAJ:MIN', () => {
  const loop = readdirSync('/dev').find((d) => /^loop\d+$/.test(d));
  if (!loop) return;
  const [maj, min] = readFileSync(`/sys/class/block/${loop}/dev`, 'utf8').trim().split(':');
  assert.equal(parseDeviceRate(`/dev/${loop}:4M`, '--io-write-bps'), { dev: `${maj}:${min}`, bytes: 4 * MiB, path: `/dev/${loop}` });
});

units('nonsense, zero and negative values name the flag and give an example', () => {
  const says = (fn: () => unknown, pattern: RegExp) => {
    try {
      fn();
    } catch (err) {
      assert.instance(err, JailError);
      assert.match((err as Error).message, pattern);
      assert.is((err as JailError).exitCode, 2);
      return;
    }
    assert.unreachable(`no error for ${pattern}`);
  };
  says(() => parseSize('lots'), /^--memory: 'lots' is not a size; use e.g. 64M or 1.5G$/);
  says(() => parseSize('0'), /^--memory: '0' is not more than zero; use e.g. 64M/);
  says(() => parseSize('-5M'), /^--memory: '-5M' is not more than zero/);
  says(() => parseSize('64X'), /is not a size/);
  says(() => parseRate('fast', '--io-read-bps'), /^--io-read-bps: 'fast' is not a rate; use e.g. 10MB\/s/);
  says(() => parseCpus('half'), /^--cpus: 'half' is not a number of CPUs; use e.g. 0.5/);
  says(() => parseCpus('0'), /^--cpus: '0' is out of range/);
  says(() => parseCpus('-1'), /^--cpus: '-1' is out of range/);
  says(() => parseCpus('99'), /this machine has \d+ CPUs?, so 0.01 to \d+/);
  says(() => parseCpuset('7-3'), /^--cpuset: '7-3' is not a list of CPUs; use e.g. 0, 0-1 or 0,1/);
  says(() => parseCpuset('64'), /^--cpuset: CPU 64 is not online/);
  says(() => parsePids('many'), /^--pids: 'many' is not a number of processes; use e.g. 64/);
  says(() => parsePids('0'), /^--pids: '0' is not more than zero/);
  says(() => parsePids('-3'), /not more than zero/);
  says(() => parseDeviceRate('10MB/s'), /^--io-write-bps: '10MB\/s' is not DEV:RATE/);
  says(() => parseDeviceRate('/dev/nonexistent:1M'), /\/dev\/nonexistent does not exist/);
  says(() => parseDeviceRate('/dev/null:1M'), /\/dev\/null is not a block device/);
  says(() => parseDeviceRate('8:0:0'), /'0' is not more than zero/);
  says(() => limitsFromFlags({ memory: 'lots' }), /^--memory: 'lots' is not a size/);
});

units('limitsFromFlags turns the flags into kernel units', () => {
  assert.equal(limitsFromFlags({ cpus: '0.5', cpuset: '0', memory: '64M', pids: '64', 'io-write-bps': ['8:0:1M'], 'io-read-bps': [] }), {
    cpus: 0.5,
    cpuset: '0',
    memory: 64 * MiB,
    pids: 64,
    ioWriteBps: [{ dev: '8:0', bytes: MiB }],
  });
  assert.equal(limitsFromFlags({}), {});
  const { flags, command } = parseArgs(['--memory', '64M', '--pids=64', '--io-write-bps', '8:0:1M', '--', 'sh'], cgroupFlags);
  assert.equal(limitsFromFlags(flags), { memory: 64 * MiB, pids: 64, ioWriteBps: [{ dev: '8:0', bytes: MiB }] });
  assert.equal(command, ['sh']);
});

// ---------------------------------------------------------------------------
// The real thing: needs root.

const test = rootSuite('06 cgroups: limits proven on the real kernel');
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
  /** Milliseconds from release() to exit. */
  ms: number;
}

/** A process that blocks until release(), then runs `script`: the init that waits for attach(). */
function standIn(script: string) {
  const child = spawn('/bin/sh', ['-c', `read go; ${script}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let releasedAt = Date.now();
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  // 'close' waits for stdout too, which the target's children may hold; 'exit' is the stand-in alone.
  const done = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - releasedAt })));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    pid: child.pid!,
    done,
    release() {
      releasedAt = Date.now();
      child.stdin.end('go\n');
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
type StandIn = ReturnType<typeof standIn>;

/** prepare -> stand-in -> attach -> body -> report -> unwind, as the launcher will do it. */
async function inJail(limits: Limits, script: string, body: (jail: StandIn, name: string) => Promise<void>): Promise<string> {
  const name = jailName();
  const spec = specFor(name);
  const hook = cgroupHook(limits);
  const cleanup = new CleanupStack();
  let report = '';
  try {
    await hook.prepare!(spec, cleanup);
    const jail = standIn(script);
    cleanup.defer('stop the stand-in', () => jail.stop());
    await hook.attach!(spec, jail.pid, cleanup);
    await body(jail, name);
    report = await captureStderr(() => hook.report!(spec));
  } finally {
    await cleanup.unwind();
  }
  assert.equal(cgroupPaths(name), [], 'the cgroup is gone after the jail');
  return report;
}

/** What `body` shows the learner on stderr (even under JAIL_QUIET=1, which silences the rest). */
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
  }
  if (quiet !== '1') process.stderr.write(text);
  return text;
}

const cpuSeconds = (name: string) => (cgroupStats(name).cpuUsec ?? NaN) / 1e6;

test('the limits are lines in files, and the jail is in its cgroup before the target runs', async () => {
  const tree = detectCgroups();
  console.log(`  (this host: cgroup ${tree.mode}, limits in v${tree.version})`);
  await inJail({ cpus: 0.5, memory: 64 * MiB, pids: 100 }, 'cat /proc/self/cgroup', async (jail, name) => {
    const [dir] = cgroupPaths(name);
    assert.ok(dir, 'the cgroup exists');
    const file = (c: string, f: string) => readFileSync(tree.version === 2 ? `/sys/fs/cgroup/${WORKSHOP_CGROUP}/${name}/${f}` : `${tree.roots[c as 'cpu']}/${WORKSHOP_CGROUP}/${name}/${f}`, 'utf8').trim();
    if (tree.version === 2) {
      assert.is(file('cpu', 'cpu.max'), '50000 100000');
      assert.is(file('memory', 'memory.max'), String(64 * MiB));
      if (existsSync(`/sys/fs/cgroup/${WORKSHOP_CGROUP}/${name}/memory.swap.max`)) assert.is(file('memory', 'memory.swap.max'), '0');
    } else {
      assert.is(file('cpu', 'cpu.cfs_quota_us'), '50000');
      assert.is(file('cpu', 'cpu.cfs_period_us'), '100000');
      assert.is(file('memory', 'memory.limit_in_bytes'), String(64 * MiB));
      if (existsSync(`${tree.roots.memory}/${WORKSHOP_CGROUP}/${name}/memory.memsw.limit_in_bytes`)) assert.is(file('memory', 'memory.memsw.limit_in_bytes'), String(64 * MiB));
    }
    assert.is(file('pids', 'pids.max'), '100');
    jail.release();
    const out = await jail.done;
    assert.is(out.code, 0, out.stderr);
    const lines = out.stdout.trim().split('\n');
    const inJailCgroup = (controller: string) => lines.some((l) => l.endsWith(`/${WORKSHOP_CGROUP}/${name}`) && (tree.version === 2 ? l.startsWith('0::') : l.split(':')[1]!.split(',').includes(controller)));
    for (const c of ['cpu', 'memory', 'pids']) assert.ok(inJailCgroup(c), `in the ${c} cgroup:\n${out.stdout}`);
  });
});

test('a memory hog past --memory is OOM-killed, the kill is counted, the report says so', async () => {
  // busybox dd reads /dev/zero into one 256M buffer: every page gets touched.
  const report = await inJail({ memory: 64 * MiB }, 'exec busybox dd if=/dev/zero of=/dev/null bs=256M count=1', async (jail, name) => {
    jail.release();
    const out = await jail.done;
    assert.is(out.signal, 'SIGKILL', `the hog was killed (exit ${out.code}, ${out.stderr})`);
    const s = cgroupStats(name);
    assert.ok(s.oomKills >= 1, `oom_kill counted: ${s.oomKills}`);
    assert.ok(s.memoryPeakBytes! <= 64 * MiB + 1 * MiB, `peak ${s.memoryPeakBytes} stays within the limit`);
    assert.ok(s.memoryPeakBytes! > 32 * MiB, `peak ${s.memoryPeakBytes}: the hog did grow`);
  });
  assert.match(report, /OOM kills: [1-9]/);
});

/** Processes anywhere on the host whose command line carries `token`. */
function processesWith(token: string): string[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(token);
      } catch {
        return false;
      }
    });
}

test("the lesson's fork bomb stops at --pids, the host stays responsive, no bomb process is left", async () => {
  const token = `baj-bomb-${process.pid}`;
  // :(){ :|:& };: in sh; $0 carries a token for finding stragglers.
  const respond = () => {
    const t0 = Date.now();
    assert.is(sh('echo host alive').stdout.trim(), 'host alive');
    return Date.now() - t0;
  };
  const calm = respond();
  const report = await inJail({ pids: 64 }, `exec 2>/dev/null; exec sh -c 'f() { f | f & }; f; wait' ${token}`, async (jail, name) => {
    jail.release();
    await waitFor('fork() refused at pids.max', () => cgroupStats(name).forksRefused > 0, 20_000);
    const s = cgroupStats(name);
    assert.ok(s.pids <= 64, `pids.current ${s.pids} <= 64`);
    if (s.pidsPeak !== undefined) assert.ok(s.pidsPeak <= 64 && s.pidsPeak >= 32, `pids.peak ${s.pidsPeak}`);
    // In a software-emulated VM every process start is slow: compare with a calm host.
    const busy = respond();
    assert.ok(busy < Math.max(2000, 10 * calm), `the host answers in ${busy} ms (${calm} ms when calm)`);
  });
  assert.match(report, /forks refused: [1-9]/);
  assert.equal(processesWith(token), [], 'no bomb process is left');
});

test('a jail still forking when it ends is killed whole: nothing outlives its cgroup', async () => {
  if (!existsSync('/usr/bin/perl')) return console.log('  (no perl: skipped)');
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

test('a busy loop under --cpus 0.2 gets about a fifth of a CPU and is throttled', async () => {
  await inJail({ cpus: 0.2 }, 'exec timeout 3 sh -c "while :; do :; done"', async (jail, name) => {
    const cpu0 = cpuSeconds(name);
    jail.release();
    const out = await jail.done;
    assert.is(out.code, 124, 'timeout ended the loop');
    const share = (cpuSeconds(name) - cpu0) / (out.ms / 1000);
    const s = cgroupStats(name);
    console.log(`  (busy loop: ${share.toFixed(3)} of a CPU over ${out.ms} ms; throttled in ${s.throttled} of ${s.periods} periods)`);
    assert.ok(share > 0.12 && share < 0.3, `share ${share}`);
    assert.ok(s.throttled > 5, `nr_throttled ${s.throttled}`);
  });
});

test('--cpuset 0 makes nproc say 1', async () => {
  await inJail({ cpuset: '0' }, 'nproc; grep Cpus_allowed_list /proc/self/status', async (jail) => {
    jail.release();
    const out = await jail.done;
    assert.is(out.code, 0, out.stderr);
    assert.match(out.stdout, /^1\nCpus_allowed_list:\s+0\n$/);
  });
});

test('a write to a loop device under --io-write-bps runs at about the rate', async () => {
  const image = `/tmp/${PREFIX}-io-${process.pid}.img`;
  spawnSync('truncate', ['-s', '32M', image]);
  const loop = spawnSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).stdout.trim();
  try {
    assert.match(loop, /^\/dev\/loop\d+$/, 'losetup made a loop device');
    const rate = 4 * MiB;
    const limits = limitsFromFlags({ 'io-write-bps': [`${loop}:4M`] });
    // O_DIRECT: on cgroup v1 only IO the process issues itself is throttled (see limitIo).
    await inJail(limits, `exec dd if=/dev/zero of=${loop} bs=1M count=12 oflag=direct status=none`, async (jail) => {
      jail.release();
      const out = await jail.done;
      assert.is(out.code, 0, out.stderr);
      const measured = (12 * MiB) / (out.ms / 1000);
      console.log(`  (dd wrote at ${(measured / MiB).toFixed(2)} MiB/s under a 4 MiB/s limit)`);
      assert.ok(measured > rate * 0.6 && measured < rate * 1.4, `rate ${measured}`);
    });
  } finally {
    if (loop) spawnSync('losetup', ['-d', loop]);
    rmSync(image, { force: true });
  }
});

/** Jails of someone else on this host (another test run, a learner's jail): not ours to remove. */
function othersJails(): string[] {
  const parent = `${detectCgroups().roots.memory}/${WORKSHOP_CGROUP}`;
  return existsSync(parent) ? readdirSync(parent).filter((d) => existsSync(`${parent}/${d}/cgroup.procs`) && !d.startsWith(`${PREFIX}-cg${process.pid}-`)) : [];
}

test('two jails share the workshop parent; it goes with the last one', async () => {
  const tree = detectCgroups();
  const parent = `${tree.roots.memory}/${WORKSHOP_CGROUP}`;
  if (othersJails().length) return console.log(`  (other jails are running: ${othersJails().join(' ')}; skipped)`);
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

test('a failed limit write unwinds: no cgroup is left', async () => {
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

test('cleanCgroups removes what a killed run left behind, kills its processes, and is idempotent', async () => {
  if (othersJails().length) return console.log(`  (other jails are running: ${othersJails().join(' ')}; clean would end them; skipped)`);
  const name = jailName();
  const lost = new CleanupStack(); // a run killed with SIGKILL never unwinds this
  const hook = cgroupHook({ pids: 20 });
  await hook.prepare!(specFor(name), lost);
  // The worst leftover: a bomb still forking (perl never gives up); a sleeper without perl.
  const token = `baj-left-${process.pid}`;
  const perl = existsSync('/usr/bin/perl');
  const jail = standIn(perl ? `exec perl -e 'fork while 1' ${token}` : `exec sleep 1000`);
  await hook.attach!(specFor(name), jail.pid, lost);
  jail.release();
  await waitFor('the leftover runs', () => cgroupStats(name).pids >= (perl ? 20 : 1));
  const removed = await cleanCgroups();
  assert.ok(removed.some((p) => p.endsWith(`/${WORKSHOP_CGROUP}/${name}`)), removed.join(' '));
  assert.equal(cgroupPaths(name), []);
  const out = await jail.done;
  assert.is(out.signal, 'SIGKILL', 'the leftover process was killed');
  assert.equal(processesWith(token), [], 'nothing of it is left');
  assert.equal(await cleanCgroups(), [], 'a second clean finds nothing');
});

units.run();
test.run();
