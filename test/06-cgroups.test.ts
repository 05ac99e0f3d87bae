// Step 06 proven from inside real jails, as a learner runs it: a memory hog
// is OOM-killed, a fork bomb stops at pids.max, a busy loop is throttled,
// --cpuset and --io-write-bps are felt. Parsing, detection, the printed twins,
// removal and the devices rules are proven in 06-cgroups-module.test.ts.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as assert from 'uvu/assert';
import { listPids } from '../lib/proc.ts';
import { WORKSHOP_CGROUP } from '../steps/06-cgroups/cgroupfs.ts';
import { detectCgroups } from '../steps/06-cgroups/hierarchy.ts';
import { isRoot, jailSuite, repo, runStep, sh, stepArgv, waitFor } from './helpers.ts';

const test = jailSuite('step 06: cgroups');
const tree = detectCgroups();
const env = { JAIL_QUIET: '1' };
const verbose = { JAIL_QUIET: '0', NO_COLOR: '1' };

/** Registers a test, or, when `missing` names what this host lacks, registers it as skipped and says why. */
function testIf(missing: string | false, name: string, fn: () => Promise<void>): void {
  if (!missing) return test(name, fn);
  if (isRoot) console.log(`  skipped: ${name} — ${missing}`); // without root the suite has said why
  test.skip(name, fn);
}

/** The jail's pids cgroup, v1 or v2, as the host sees it. */
function pidsDir(name: string): string | undefined {
  const dir = join(tree.roots.pids ?? '/nonexistent', WORKSHOP_CGROUP, name);
  return existsSync(`${dir}/pids.max`) ? dir : undefined;
}

/** The PID namespace of a process, as /proc names it (pid:[4026532…]), or undefined once it is gone. */
function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

test('memory: a hog that allocates past --memory is OOM-killed, the jail reports it, the host is untouched', async () => {
  // awk doubles a string until the kernel says no; the shell around it survives to report
  const r = await runStep(6, ['--memory', '128M', '--', 'sh', '-c', "awk 'BEGIN{s=\"x\"; while(1) s = s s}'; echo exit=$?"], { env: verbose, timeoutMs: 60_000 });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), 'exit=137', 'awk died of SIGKILL (128+9)');
  assert.match(r.stderr, /OOM kills: [1-9]/);
  assert.match(r.stderr, /memory at most 12\dM of 128M/);
});

test("pids: the lesson's fork bomb stops at --pids, the host stays responsive, and every bomb process is gone afterwards", async () => {
  // the lesson's while(fork()); in shell: every process forks for ever, so the
  // bomb presses against pids.max for as long as it lives (--cpus keeps the spinning polite)
  // (busybox's sh exits when a fork fails, so the jail's first process stays out of the bomb)
  const bomb = 'bomb() { while :; do bomb & done; }; (bomb 2>/dev/null); exec sleep 600';
  // how long the host takes to start 20 processes when calm (a VM under emulation is far slower than bare metal)
  const forks20 = () => {
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) assert.is(sh('true').code, 0);
    return Date.now() - t0;
  };
  const calm = forks20();
  const [cmd, ...args] = stepArgv(6, '--pids', '64', '--cpus', '0.5', '--name', 'bomb', '--', 'sh', '-c', bomb);
  const child = spawn(cmd!, args, { cwd: repo, env: { ...process.env, ...verbose }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  let jailNs: string | undefined;
  try {
    const dir = await waitFor("the jail's cgroup", () => pidsDir('baj-bomb'), 15_000);
    // the bomb fills the cgroup up to pids.max and the kernel refuses the rest
    await waitFor('refused forks', () => /max (\d+)/.exec(readFileSync(`${dir}/pids.events`, 'utf8'))?.[1] !== '0', 15_000);
    // every process in the jail's cgroup shares the jail's PID namespace: remember it, to look for survivors
    jailNs = pidNamespace(Number(readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n')[0]));
    assert.ok(Number(readFileSync(`${dir}/pids.current`, 'utf8')) <= 64);
    // the host still forks happily, about as fast as when calm
    const during = forks20();
    assert.ok(during < Math.max(2000, 4 * calm), `the host stayed responsive: 20 forks took ${during} ms (${calm} ms when calm)`);
  } finally {
    child.kill('SIGTERM'); // also when an assertion failed: the jail must not outlive its test
    await closed;
  }
  assert.match(stderr, /forks refused: [1-9]/);
  assert.ok(jailNs?.startsWith('pid:['), `the jail's PID namespace: ${jailNs}`);
  assert.equal(listPids().filter((pid) => pidNamespace(pid) === jailNs), [], 'no bomb process survives');
  assert.not.ok(pidsDir('baj-bomb'), 'the cgroup is gone');
});

/**
 * Whether this kernel gives a pids cgroup a pids.peak (newer kernels only):
 * asked of a probe cgroup, made and removed at once. undefined: cannot tell.
 */
function kernelHasPidsPeak(): boolean | undefined {
  if (!isRoot || !tree.roots.pids) return undefined;
  const probe = join(tree.roots.pids, `${WORKSHOP_CGROUP}-probe-${process.pid}`);
  mkdirSync(probe);
  try {
    return existsSync(join(probe, 'pids.max')) ? existsSync(join(probe, 'pids.peak')) : undefined;
  } finally {
    rmdirSync(probe);
  }
}
const pidsPeak = kernelHasPidsPeak();
const noPidsPeak = pidsPeak === false ? 'this kernel has no pids.peak' : pidsPeak === undefined && (isRoot ? 'could not probe for pids.peak' : 'needs root');

testIf(noPidsPeak, "pids: the report's most tasks at once (pids.peak) is exactly --pids under a fork bomb", async () => {
  // the timer is forked before the bomb fills the jail; after 2 s the jail's
  // shell kills everything but itself and the init (kill -1), and ends
  const bomb = 'bomb() { while :; do bomb & done; }; sleep 2 & timer=$!; (bomb 2>/dev/null) & wait $timer; kill -9 -1; echo over';
  const r = await runStep(6, ['--pids', '64', '--cpus', '0.5', '--', 'sh', '-c', bomb], { env: verbose, timeoutMs: 60_000 });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), 'over');
  assert.match(r.stderr, /tasks at most 64 of 64; forks refused: [1-9]/);
});

test('cpu: a busy loop under --cpus 0.2 gets about a fifth of a CPU, and is throttled', async () => {
  const r = await runStep(6, ['--cpus', '0.2', '--', 'sh', '-c', 'time timeout 3 sh -c "while :; do :; done"'], { env: verbose, timeoutMs: 60_000 });
  const secs = (label: string) => {
    const m = new RegExp(`${label}\\s+(\\d+)m\\s*([\\d.]+)s`).exec(r.stderr);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  const share = (secs('user') + secs('sys')) / secs('real');
  assert.ok(share > 0.1 && share < 0.3, `the loop got ${share.toFixed(2)} of a CPU`);
  const throttled = Number(/throttled in (\d+) of/.exec(r.stderr)?.[1]);
  assert.ok(throttled > 5, `throttled in ${throttled} periods`);
});

test('cpuset: --cpuset 0 makes nproc inside say 1', async () => {
  const r = await runStep(6, ['--cpuset', '0', '--', 'nproc'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), '1');
  const all = await runStep(6, ['--', 'nproc'], { env });
  assert.is(all.stdout.trim(), String(readdirSync('/sys/devices/system/cpu').filter((d) => /^cpu\d+$/.test(d)).length));
});

const noLoop = !existsSync('/dev/loop-control') ? 'no loop devices on this kernel (/dev/loop-control)' : sh('command -v losetup').code !== 0 && 'no losetup (util-linux)';
testIf(noLoop, 'io: a write to a test-made loop device under --io-write-bps runs at about the set rate', async () => {
  const dir = mkdtempSync('/tmp/baj-io-');
  const image = join(dir, 'disk.img');
  let loop = '';
  try {
    assert.is(sh(`truncate -s 64M ${image}`).code, 0);
    loop = sh(`losetup --find --show ${image}`).stdout.trim();
    assert.match(loop, /^\/dev\/loop\d+$/, 'losetup made a loop device');
    // oflag=direct: the write goes to the device now, in the jail's name (page-cache writeback would not be counted on v1)
    const write = `time dd if=/dev/zero of=/dev/${basename(loop)} bs=1M count=12 oflag=direct`;
    const r = await runStep(6, ['--device', loop, '--io-write-bps', `${loop}:4M`, '--', 'sh', '-c', write], { env: verbose, timeoutMs: 60_000 });
    assert.is(r.code, 0, r.stderr);
    const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(r.stderr);
    const rate = 12 / (Number(m?.[1]) * 60 + Number(m?.[2]));
    assert.ok(rate > 2.5 && rate < 6, `wrote at ${rate.toFixed(2)} MiB/s under a 4 MiB/s limit`);
  } finally {
    if (loop) sh(`losetup -d ${loop}`);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--help names none as the default network, and every limit flag", async () => {
  const r = await runStep(6, ['--help'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /--net MODE\s+none \(only lo; the default\)/);
  assert.not.match(r.stdout, /bridge \(default\)/);
  for (const flag of ['--cpus', '--cpuset', '--memory', '--pids', '--io-read-bps', '--io-write-bps', '--device']) assert.ok(r.stdout.includes(`  ${flag} `), flag);
});

test('bad input: --device must name a device node', async () => {
  const r = await runStep(6, ['--device', '/etc/passwd', '--', 'true'], { env });
  assert.is(r.code, 2);
  assert.match(r.stderr, /--device \/etc\/passwd: not a device node/);
});

test("the step names this host's cgroup layout (v1, v2 or hybrid) before it writes the first limit", async () => {
  const r = await runStep(6, ['--pids', '32', '--', 'true'], { env: verbose });
  assert.is(r.code, 0, r.stderr);
  const said = { v2: 'This host uses cgroup v2', hybrid: 'This host uses hybrid cgroups', v1: 'This host uses cgroup v1' }[tree.mode];
  assert.ok(r.stderr.includes(said), r.stderr);
  assert.ok(r.stderr.indexOf(said) < r.stderr.indexOf('$ echo 32 > '), 'the layout first, then the writes');
});

test('bad input: a nonsense, zero or negative limit ends the step with status 2 and one error line, and nothing is made', async () => {
  // the exact sentences are the module test's; here: the command line, before anything exists (after.each checks the host)
  for (const [flag, value] of [
    ['--memory', 'lots'],
    ['--memory', '0'],
    ['--cpus', '-1'],
    ['--pids', '0'],
    ['--cpuset', '99'],
  ] as const) {
    const r = await runStep(6, [flag, value, '--', 'true'], { env });
    assert.is(r.code, 2, `${flag} ${value}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^error: ${flag}: `, 'm'));
    assert.is(r.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1);
    assert.not.match(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
  }
});

test.run();
