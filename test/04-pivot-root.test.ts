import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { jailIdRanges } from '../steps/03-namespaces/idrange.ts';
import { jailSuite, hostState, repo, runStep, sh, waitFor } from './helpers.ts';

const test = jailSuite('step 04: pivot_root and the god process');
const env = { JAIL_QUIET: '1' };

/** Starts `npm run step 4 -- …` in the background; resolves once the jail's target runs. */
async function startJail(args: string[]) {
  const child = spawn(process.execPath, ['bin/step.mjs', '4', ...args], { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  const closed = new Promise<number>((r) => child.on('close', (code, sig) => r(code ?? (sig === 'SIGKILL' ? 137 : 128))));
  try {
    await waitFor('the jail to start', () => stdout.includes('ready'), 15_000);
  } catch (err) {
    child.kill('SIGKILL'); // a jail that never said ready must not outlive its test
    await closed;
    throw err;
  }
  return { child, closed, stdout: () => stdout };
}

test('the init is PID 1, the command is its child, and ps shows only the jail', async () => {
  const r = await runStep(4, ['--hostname', 'hello', '--', 'sh', '-c', 'hostname; ps -o pid,ppid,comm; true'], { env });
  assert.is(r.code, 0, r.stderr);
  const [hostname, , ...rows] = r.stdout.trim().split('\n');
  assert.is(hostname, 'hello');
  const procs = rows.map((l) => l.trim().split(/\s+/));
  assert.equal(procs[0]!.slice(0, 3), ['1', '0', 'node'], 'PID 1 is the init');
  const shRow = procs.find((p) => p[2] === 'sh')!;
  assert.is(shRow[1], '1', "the command's parent is PID 1");
  assert.equal(procs.map((p) => p[2]), ['node', 'sh', 'ps']);
});

test('uname -r inside equals the host kernel', async () => {
  const r = await runStep(4, ['--', 'uname', '-r'], { env });
  assert.is(r.stdout.trim(), sh('uname -r').stdout.trim());
});

test('after pivot_root a host marker file is unreachable, and no host path is mounted', async () => {
  const dir = mkdtempSync('/tmp/baj-marker-');
  writeFileSync(join(dir, 'marker'), 'host secret\n');
  try {
    const r = await runStep(4, ['--', 'sh', '-c', `cat ${dir}/marker; cut -d' ' -f5 /proc/self/mountinfo`], { env });
    assert.not.match(r.stdout, /host secret/);
    assert.equal(r.stdout.trim().split('\n').sort(), ['/', '/dev', '/dev/pts', '/dev/shm', '/proc', '/sys']);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('the old root is gone: nothing of the host is mounted, no .old_root directory', async () => {
  const hostMounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).length;
  const r = await runStep(4, ['--', 'sh', '-c', 'wc -l < /proc/self/mountinfo; ls -a /'], { env });
  const [count, ...root] = r.stdout.trim().split('\n');
  assert.is(Number(count), 6);
  assert.ok(hostMounts > 6);
  assert.not.ok(root.includes('.old_root'));
  assert.not.ok(root.includes('work') || root.includes('boot'));
});

test("step 02's escape no longer escapes", async () => {
  const r = await runStep(4, ['--try-escape'], { env });
  assert.is(r.code, 0, r.stderr);
  const seen = r.stdout.match(/after the escape attempt, \/ holds: (.*)/)?.[1]?.split(' ') ?? [];
  assert.ok(seen.includes('bin') && seen.includes('linuxrc'), `landed in the rootfs: ${seen}`);
  assert.not.ok(seen.includes('work') || seen.includes('boot') || seen.includes('lost+found'), `reached the host: ${seen}`);
});

test('/dev holds only the listed nodes, not the host devtmpfs', async () => {
  const r = await runStep(4, ['--', 'sh', '-c', 'ls /dev; ls -l /dev/null /dev/ptmx; grep " /dev " /proc/self/mountinfo'], { env });
  const [lsDev, rest] = [r.stdout.split('\n').slice(0, 13), r.stdout.split('\n').slice(13).join('\n')];
  assert.equal(lsDev, ['fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']);
  assert.match(rest, /^crw-rw-rw-\s+1 root\s+root\s+1,\s+3 .*\/dev\/null$/m);
  assert.match(rest, /\/dev\/ptmx -> pts\/ptmx/);
  assert.match(rest, / - tmpfs /);
});

test('PID 1 passes the exit status through', async () => {
  const code = 1 + Math.floor(Math.random() * 120);
  const r = await runStep(4, ['--', 'sh', '-c', `exit ${code}`], { env });
  assert.is(r.code, code);
  const killed = await runStep(4, ['--', 'sh', '-c', 'kill -9 $$'], { env });
  assert.is(killed.code, 128 + 9);
});

test('PID 1 reaps orphans: no zombie in ps', async () => {
  // the inner sh exits at once, orphaning its sleep; PID 1 inherits it and must reap it
  const r = await runStep(4, ['--', 'sh', '-c', 'sh -c "sleep 0.2 &"; sleep 1; ps -o stat,comm; true'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.not.match(r.stdout, /^Z/m);
  assert.not.match(r.stdout, /sleep/);
});

test('SIGTERM to the launcher stops the jail within seconds and leaves nothing', async () => {
  const jail = await startJail(['--', 'sh', '-c', 'echo ready; sleep 100']);
  const t0 = Date.now();
  jail.child.kill('SIGTERM');
  const code = await jail.closed;
  assert.ok(Date.now() - t0 < 4000, 'stopped within the grace period');
  assert.is(code, 143);
});

test('SIGINT (Ctrl-C) to the launcher stops the jail', async () => {
  const jail = await startJail(['--', 'sh', '-c', 'echo ready; sleep 100']);
  jail.child.kill('SIGINT');
  assert.is(await jail.closed, 130);
});

test('SIGKILL to the launcher: the jail dies with it', async () => {
  const jail = await startJail(['--', 'sh', '-c', 'echo ready; sleep 100']);
  assert.ok(hostState().jailProcesses.length >= 2, 'the jail runs');
  jail.child.kill('SIGKILL');
  await jail.closed;
  await waitFor('the jail to die', () => hostState().jailProcesses.length === 0, 5000);
});

test('an interactive shell gets job control, and Ctrl-C reaches its child, not the launcher', async () => {
  // script(1) gives the launcher a real terminal; we type into it like a learner would
  const term = spawn('script', ['-qfec', `${process.execPath} bin/step.mjs 4 -- sh -i`, '/dev/null'], { cwd: repo, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  term.stdout.on('data', (d) => (screen += d));
  const closed = new Promise<number>((r) => term.on('close', (code) => r(code ?? -1)));
  const typeAfter = async (seen: RegExp, keys: string) => {
    await waitFor(`${seen} on the terminal (screen so far: ${JSON.stringify(screen.slice(-300))})`, () => seen.test(screen), 15_000);
    term.stdin.write(keys);
  };
  try {
    await typeAfter(/# /, 'echo flags $-\n');
    await typeAfter(/flags \S+/, 'sleep 30; echo after-sleep\n');
    await typeAfter(/sleep 30; echo after-sleep\r?\n/, '');
    await new Promise((r) => setTimeout(r, 300)); // let sh start sleep before Ctrl-C
    term.stdin.write('\x03');
    await typeAfter(/\^C|# $/, 'echo alive $?\n');
    await typeAfter(/alive \d+/, 'exit 3\n');
    assert.is(await closed, 3, "the shell's exit status comes back through the launcher");
  } finally {
    term.kill('SIGKILL');
  }
  assert.match(screen, /flags \S*m/, 'job control is on');
  assert.match(screen, /alive 130/, 'the shell survived; its sleep got SIGINT');
  assert.not.match(screen, /after-sleep\r?\n.*after-sleep/s);
});

test('the same jail runs on the Debian rootfs', async () => {
  const built = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
  assert.is(built.code, 0, built.stderr);
  const r = await runStep(4, ['--debian', '--', 'sh', '-c', 'cat /etc/debian_version; ps -e -o pid=,comm= | head -1'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\d+\.\d+\n\s*1 node\n$/);
});

test("with --user, root inside is a free range's first uid outside (not useradd's 100000) and the jail still starts", async () => {
  const { uid } = jailIdRanges();
  assert.ok(uid.base > 600_100_000 || sh('grep -q "^root:" /etc/subuid').code === 0, `${uid.base}: above every range useradd hands out, or root's own`);
  const r = await runStep(4, ['--user', '--', 'sh', '-c', 'id -u; cat /proc/self/uid_map; touch /bin/x || echo denied'], { env });
  assert.equal(r.stdout.trim().split('\n').map((l) => l.trim().replace(/\s+/g, ' ')), ['0', `0 ${uid.base} ${uid.count}`, 'denied']);
});

test('bad input: missing rootfs, bad hostname, --rootfs with --debian', async () => {
  const missing = await runStep(4, ['--rootfs', '/nope', '--', 'true'], { env });
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /rootfs \/nope does not exist/);
  const host = await runStep(4, ['--hostname', '-bad-', '--', 'true'], { env });
  assert.is(host.code, 2);
  assert.match(host.stderr, /not a valid hostname/);
  const both = await runStep(4, ['--debian', '--rootfs', '/x', '--', 'true'], { env });
  assert.is(both.code, 2);
});

test('works from a checkout whose path has spaces and non-ASCII characters', async () => {
  // a copy of the sources, as `git clone` would make them, in ~/My Projects/监狱 of sorts
  const dir = join(mkdtempSync('/tmp/baj-path test-'), 'My Projects', '监狱 jail');
  try {
    sh(`mkdir -p "${dir}" && cp -r ${repo}/bin ${repo}/lib ${repo}/steps ${repo}/package.json "${dir}/" && ln -s ${repo}/node_modules "${dir}/node_modules"`);
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [join(dir, 'bin/step.mjs'), '4', '--hostname', 'spaced', '--', 'sh', '-c', 'hostname; echo pid $$'], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });
    assert.is(r.code, 0, r.out);
    assert.match(r.out, /^spaced\npid \d+\n$/m);
  } finally {
    rmSync(join(dir, '../..'), { recursive: true, force: true });
  }
});

test("no descriptor the launcher inherited reaches the target (a host directory's fd would be a way out)", async () => {
  const dir = openSync('/etc', 'r'); // a host directory, handed to the launcher as its fd 100
  try {
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, ['bin/step.mjs', '4', '--', 'sh', '-c', 'for f in /proc/self/fd/*; do echo "$f $(readlink $f)"; done'], { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', ...Array<'ignore'>(97).fill('ignore'), dir] });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });
    assert.is(r.code, 0, r.out);
    const fds = r.out.trim().split('\n').map((l) => Number(l.split(' ')[0]!.split('/').pop()));
    // 0-2, and the one the shell's glob itself opened to list the directory
    assert.ok(fds.every((fd) => fd <= 3), `the target holds ${r.out}`);
    assert.not.match(r.out, /\/etc/);
  } finally {
    closeSync(dir);
  }
});

test.run();
