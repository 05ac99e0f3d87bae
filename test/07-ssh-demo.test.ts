import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { hostState, isRoot, jailSuite, repo, runNode, runStep, sh, waitFor } from './helpers.ts';
import { rootfsDir, runDir } from '../lib/state.ts';
import { demoRoot } from '../steps/07-ssh-demo/root.ts';
import { clientKey, sshCommand } from '../steps/07-ssh-demo/sshd.ts';

const env = { JAIL_QUIET: '1' };
const test = jailSuite('step 07: the ssh demo', { afterEach: () => runStep(7, ['--stop'], { env }) });

test.before(async () => {
  if (!isRoot) return;
  assert.is((await runStep(7, ['--stop'], { env })).code, 0);
  const built = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
  assert.is(built.code, 0, built.stderr);
});

function ssh(command: string, extra: string[] = []) {
  const [cmd, ...args] = sshCommand(extra);
  return spawnSync(cmd!, [...args, command], { encoding: 'utf8', timeout: 20_000 });
}

async function provesTheLesson(mode: string) {
  const up = await runStep(7, ['--detach', '--net', mode], { env, timeoutMs: 180_000 });
  assert.is(up.code, 0, up.stderr);
  assert.is(ssh('hostname').stdout, 'hello\n');
  const ps = ssh('ps -e -o pid=,ppid=,comm=').stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
  assert.equal(ps[0], ['1', '0', 'node'], 'the god process is PID 1');
  const sshd = ps.find((p) => p[2] === 'sshd');
  assert.ok(sshd && sshd[1] === '1', 'sshd runs under PID 1');
  assert.ok(ps.length < 12, `only the jail's processes: ${ps.map((p) => p[2])}`);
  assert.is(ssh('uname -r').stdout.trim(), sh('uname -r').stdout.trim());
  // the session's own processes are in the jail's cgroup (read from inside), whose limits are the defaults (read from the host)
  const cgroup = ssh('cat /proc/self/cgroup').stdout;
  const pidsPath = cgroup.match(/^\d+:pids:(\/build-a-jail\/baj-ssh-demo)$/m)?.[1] ?? cgroup.match(/^0::(\/build-a-jail\/baj-ssh-demo)$/m)?.[1];
  assert.ok(pidsPath, `the session is in the jail's cgroup: ${cgroup}`);
  const limit = (v1: string, v2: string) => readFileSync(existsSync(`/sys/fs/cgroup/${v1}`) ? `/sys/fs/cgroup/${v1}` : `/sys/fs/cgroup/${v2}`, 'utf8').trim();
  assert.is(limit(`pids${pidsPath}/pids.max`, `${pidsPath}/pids.max`), '256');
  assert.is(limit(`memory${pidsPath}/memory.limit_in_bytes`, `${pidsPath}/memory.max`), String(512 * 1024 * 1024));
}

test("host network (the lesson's way): ssh -p 23322 root@127.0.0.1 is hello, PID 1 is the god process", async () => {
  await provesTheLesson('host');
});

test('bridge network: the same, through the published port', async () => {
  await provesTheLesson('bridge');
  assert.match(ssh('ip -4 -o addr show eth0').stdout, /inet 10\.231\.0\.\d+\//);
});

test('an interactive session gets a terminal (ssh -tt)', async () => {
  assert.is((await runStep(7, ['--detach'], { env, timeoutMs: 180_000 })).code, 0);
  const r = ssh('tty; test -t 0 && echo is-a-tty', ['-tt']);
  assert.match(r.stdout, /\/dev\/pts\/\d+/);
  assert.match(r.stdout, /is-a-tty/);
});

test('--stop ends sshd and every open session within seconds, and nothing of the jail survives', async () => {
  assert.is((await runStep(7, ['--detach'], { env, timeoutMs: 180_000 })).code, 0);
  const [cmd, ...args] = sshCommand();
  const session = spawn(cmd!, [...args, 'echo in; sleep 600'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  session.stdout.on('data', (d) => (out += d));
  const sessionClosed = new Promise((r) => session.on('close', r));
  await waitFor('the session', () => out.includes('in'));
  const t0 = Date.now();
  assert.is((await runStep(7, ['--stop'], { env })).code, 0);
  await sessionClosed;
  assert.ok(Date.now() - t0 < 5000, 'the session ended with the jail');
  assert.equal(hostState().jailProcesses, []);
});

test('SIGTERM to a foreground jail ends it too', async () => {
  const child = spawn(process.execPath, ['bin/step.mjs', '7'], { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  await waitFor('sshd', () => ssh('true', ['-o', 'ConnectTimeout=1']).status === 0, 60_000, 200);
  child.kill('SIGTERM');
  assert.is(await closed, 143);
});

test("the root is an overlay of step 01's Debian tree: the jail's writes, deletions and host keys land in its own top, Debian is untouched, the top goes with the jail", async () => {
  assert.is((await runStep(7, ['--detach'], { env, timeoutMs: 180_000 })).code, 0);
  const { upper, dir, lower } = demoRoot(rootfsDir('debian'));
  const r = ssh('touch /etc/made-in-jail && rm /etc/debian_version && awk \'$2 == "/" { print $1, $3 }\' /proc/mounts');
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout, 'overlay overlay\n', "the jail's / is an overlay");
  assert.ok(existsSync(join(upper, 'etc/made-in-jail')), 'a write lands in the upper');
  const whiteout = lstatSync(join(upper, 'etc/debian_version'));
  assert.ok(whiteout.isCharacterDevice() && whiteout.rdev === 0, 'a deletion is a 0/0 whiteout in the upper');
  assert.ok(existsSync(join(lower, 'etc/debian_version')) && !existsSync(join(lower, 'etc/made-in-jail')), 'the Debian tree is untouched');
  // host keys are made by this jail, in its upper: not the debootstrap cache's, and not in the Debian tree
  assert.ok(existsSync(join(upper, 'etc/ssh/ssh_host_ed25519_key')));
  assert.not.ok(readdirSync(join(lower, 'etc/ssh')).some((f) => f.startsWith('ssh_host_')), 'no host keys in the shared tree');
  const cached = sh(`ls ${process.env.JAIL_CACHE || '/var/cache/build-a-jail'}/debootstrap/*/etc/ssh/ssh_host_ed25519_key.pub | head -1`).stdout.trim();
  assert.ok(cached, 'the debootstrap cache holds the host keys its openssh-server made');
  assert.is.not(readFileSync(cached, 'utf8'), readFileSync(join(upper, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8'));
  assert.is(statSync(clientKey()).mode & 0o777, 0o600);
  assert.not.ok(readFileSync('/proc/self/mountinfo', 'utf8').includes(dir), "the overlay is mounted in the jail's namespace only");
  assert.is((await runStep(7, ['--stop'], { env })).code, 0);
  assert.not.ok(existsSync(dir), 'the top is gone with the jail');
});

test("SIGKILL of the detached launcher: the jail dies with it, and npm run clean removes the demo's top (nothing else is left)", async () => {
  assert.is((await runStep(7, ['--detach'], { env, timeoutMs: 180_000 })).code, 0);
  const launcher = Number(readFileSync(join(runDir(), 'ssh-demo.pid'), 'utf8'));
  const { dir } = demoRoot(rootfsDir('debian'));
  process.kill(launcher, 'SIGKILL');
  await waitFor('the jail to die with its launcher', () => hostState().jailProcesses.length === 0, 10_000);
  assert.ok(existsSync(join(dir, 'upper')), "a SIGKILLed launcher's cleanup never ran");
  const cleaned = await runNode([join(repo, 'bin/clean.ts')], { env: { JAIL_QUIET: '0' } }); // it says what it removed
  assert.is(cleaned.code, 0, cleaned.stderr);
  assert.match(cleaned.stdout + cleaned.stderr, /removed the ssh demo's top/);
  assert.not.ok(existsSync(dir), 'the top is gone');
});

test('a taken port is refused before anything is made', async () => {
  const squatter = createServer().listen({ host: '127.0.0.1', port: 23322 });
  await new Promise((r) => squatter.once('listening', r));
  try {
    const r = await runStep(7, ['--detach'], { env });
    assert.is(r.code, 1);
    assert.match(r.stderr, /port 23322 on 127\.0\.0\.1 is already in use/);
  } finally {
    squatter.close();
  }
});

test('a second --detach while the demo runs is refused', async () => {
  assert.is((await runStep(7, ['--detach'], { env, timeoutMs: 180_000 })).code, 0);
  const again = await runStep(7, ['--detach'], { env });
  assert.is(again.code, 1);
  assert.match(again.stderr, /the ssh demo is already running \(launcher pid \d+\)/);
});

test('a command is refused: step 7 runs the start script', async () => {
  const r = await runStep(7, ['--', 'ls'], { env });
  assert.is(r.code, 2);
  assert.match(r.stderr, /step 7 runs the lesson's start script; it takes no command/);
});

test('--net none is refused: it would leave no way in', async () => {
  const r = await runStep(7, ['--net', 'none'], { env });
  assert.is(r.code, 2);
  assert.match(r.stderr, /--net none would leave no way in for ssh/);
});

test.run();
