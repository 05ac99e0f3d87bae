import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as assert from 'uvu/assert';
import { jailSuite, hostState, repo, runStep, sh, waitFor } from './helpers.ts';

const test = jailSuite('step 06: cgroups');
const env = { JAIL_QUIET: '1' };
const verbose = { JAIL_QUIET: '0', NO_COLOR: '1' };

/** The jail's pids cgroup, v1 or v2, as the host sees it. */
function pidsDir(name: string): string | undefined {
  for (const d of [`/sys/fs/cgroup/pids/build-a-jail/${name}`, `/sys/fs/cgroup/build-a-jail/${name}`]) if (existsSync(`${d}/pids.max`)) return d;
  return undefined;
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
  const child = spawn(process.execPath, ['--import', 'tsx', 'lib/run-step.ts', '6', '--pids', '64', '--cpus', '0.5', '--name', 'bomb', '--', 'sh', '-c', bomb], { cwd: repo, env: { ...process.env, ...verbose }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  try {
    const dir = await waitFor("the jail's cgroup", () => pidsDir('baj-bomb'), 15_000);
    // the bomb fills the cgroup up to pids.max and the kernel refuses the rest
    await waitFor('refused forks', () => /max (\d+)/.exec(readFileSync(`${dir}/pids.events`, 'utf8'))?.[1] !== '0', 15_000);
    const peak = existsSync(`${dir}/pids.peak`) ? readFileSync(`${dir}/pids.peak`, 'utf8').trim() : '64';
    assert.is(peak, '64', 'the most tasks at once is exactly pids.max');
    assert.ok(Number(readFileSync(`${dir}/pids.current`, 'utf8')) <= 64);
    // the host still forks happily, about as fast as when calm
    const during = forks20();
    assert.ok(during < Math.max(2000, 4 * calm), `the host stayed responsive: 20 forks took ${during} ms (${calm} ms when calm)`);
  } finally {
    child.kill('SIGTERM'); // also when an assertion failed: the jail must not outlive its test
    await closed;
  }
  assert.match(stderr, /forks refused: [1-9]/);
  assert.equal(hostState().jailProcesses, [], 'no bomb process survives');
  assert.not.ok(pidsDir('baj-bomb'), 'the cgroup is gone');
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

test('io: a write to a test-made loop device under --io-write-bps runs at about the set rate', async () => {
  const dir = mkdtempSync('/tmp/baj-io-');
  const image = join(dir, 'disk.img');
  assert.is(sh(`truncate -s 64M ${image}`).code, 0);
  const loop = sh(`losetup --find --show ${image}`).stdout.trim();
  assert.match(loop, /^\/dev\/loop\d+$/, 'losetup made a loop device');
  try {
    // oflag=direct: the write goes to the device now, in the jail's name (page-cache writeback would not be counted on v1)
    const write = `time dd if=/dev/zero of=/dev/${basename(loop)} bs=1M count=12 oflag=direct`;
    const r = await runStep(6, ['--device', loop, '--io-write-bps', `${loop}:4M`, '--', 'sh', '-c', write], { env: verbose, timeoutMs: 60_000 });
    assert.is(r.code, 0, r.stderr);
    const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(r.stderr);
    const rate = 12 / (Number(m?.[1]) * 60 + Number(m?.[2]));
    assert.ok(rate > 2.5 && rate < 6, `wrote at ${rate.toFixed(2)} MiB/s under a 4 MiB/s limit`);
  } finally {
    sh(`losetup -d ${loop}`);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input: --device must name a device node', async () => {
  const r = await runStep(6, ['--device', '/etc/passwd', '--', 'true'], { env });
  assert.is(r.code, 2);
  assert.match(r.stderr, /--device \/etc\/passwd: not a device node/);
});

test('the step shows each limit as a file write', async () => {
  const r = await runStep(6, ['--cpus', '0.5', '--memory', '64M', '--pids', '32', '--', 'true'], { env: verbose });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /\$ echo "?50000 100000"? > \S+cpu\.max|\$ echo 50000 > \S+cpu\.cfs_quota_us/);
  assert.match(r.stderr, /pids\.max/);
  assert.match(r.stderr, /cgroups?: (hybrid|v1|v2)/);
});

test('bad input: nonsense, zero and negative limits are one clear sentence each, and nothing is made', async () => {
  for (const [flag, value, message] of [
    ['--memory', 'lots', /--memory: 'lots' is not a size/],
    ['--memory', '0', /--memory/],
    ['--cpus', '-1', /--cpus/],
    ['--pids', '0', /--pids/],
    ['--cpuset', '99', /--cpuset/],
  ] as const) {
    const r = await runStep(6, [flag, value, '--', 'true'], { env });
    assert.is.not(r.code, 0, `${flag} ${value} was accepted`);
    assert.match(r.stderr, message);
    assert.not.match(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
  }
});

test.run();
