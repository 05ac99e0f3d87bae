import { readFileSync } from 'node:fs';
import * as assert from 'uvu/assert';
import { rootfsDir } from '../lib/state.ts';
import { jailSuite, runStep, sh } from './helpers.ts';

const test = jailSuite('step 03: namespaces');
const env = { JAIL_QUIET: '1' };

const hostHostname = () => readFileSync('/proc/sys/kernel/hostname', 'utf8').trim();

test('--uts: the hostname changes inside and not outside', async () => {
  const outside = hostHostname();
  const r = await runStep(3, ['--uts', '--hostname', 'inside-uts', '--', 'hostname'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, 'inside-uts\n');
  assert.is(hostHostname(), outside);
});

test('--pid --mount: the command is PID 1 and ps shows only the jail', async () => {
  const r = await runStep(3, ['--pid', '--mount', '--', 'sh', '-c', 'echo $$; ps -o pid,comm; true'], { env });
  assert.is(r.code, 0, r.stderr);
  const [pid, , ...rows] = r.stdout.trim().split('\n');
  assert.is(pid, '1');
  const comms = rows.map((l) => l.trim().split(/\s+/)[1]);
  assert.equal(comms, ['sh', 'ps']);
});

test('--pid alone: still PID 1, but /proc is not remounted (the lesson: a PID namespace wants a mount namespace)', async () => {
  const r = await runStep(3, ['--pid', '--', 'sh', '-c', 'echo $$; ls /proc | wc -l'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n'), ['1', '0']);
});

test("--mount: a mount made inside is not in the host's mount table", async () => {
  const r = await runStep(3, ['--mount', '--', 'sh', '-c', 'mount -t proc proc /proc && mount -t tmpfs baj-inside /mnt && grep -c baj-inside /proc/mounts'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), '1');
  assert.not.match(readFileSync('/proc/self/mountinfo', 'utf8'), /baj-inside/);
});

test('--net: only lo exists inside', async () => {
  const r = await runStep(3, ['--net', '--', 'sh', '-c', "ip -o link show | cut -d: -f2 | tr -d ' '"], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), 'lo');
});

test('--ipc: a SysV message queue made on the host is not visible inside', async () => {
  const id = sh('ipcmk -Q').stdout.match(/(\d+)/)?.[1];
  assert.ok(id, 'ipcmk made a queue');
  try {
    const seen = (args: string[]) => runStep(3, [...args, '--', 'sh', '-c', 'mount -t proc proc /proc; tail -n +2 /proc/sysvipc/msg | wc -l'], { env });
    const shared = await seen(['--mount']);
    assert.ok(Number(shared.stdout.trim()) >= 1, 'without --ipc the queue is visible');
    const isolated = await seen(['--mount', '--pid', '--ipc']);
    assert.is(isolated.code, 0, isolated.stderr);
    assert.is(isolated.stdout.trim(), '0');
  } finally {
    sh(`ipcrm -q ${id}`);
  }
});

test('--user: uid 0 inside is a non-zero uid outside, and cannot write a root-owned host file', async () => {
  const r = await runStep(3, ['--user', '--mount', '--pid', '--', 'sh', '-c', 'id -u; cat /proc/self/uid_map; touch /etc/baj-written && echo WROTE'], { env });
  const [uid, map] = r.stdout.trim().split('\n');
  assert.is(uid, '0');
  const outside = Number(map!.trim().split(/\s+/)[1]);
  assert.ok(outside > 0, `root inside is uid ${outside} outside`);
  assert.not.match(r.stdout, /WROTE/);
  assert.match(r.stderr, /Permission denied/);
  assert.is(r.code, 1);
});

test('--user works without root: a rootless jail', async () => {
  // a rootfs the user can reach: the workshop's own sits behind a directory only jails' roots may cross (step 08)
  const dir = sh('mktemp -d /tmp/baj-rootless-XXXXXX').stdout.trim();
  sh(`cp -a ${rootfsDir('busybox')} ${dir}/rootfs && chmod 755 ${dir}`);
  let r;
  try {
    r = sh(`cd ${process.cwd()} && JAIL_QUIET=1 setpriv --reuid=65534 --regid=65534 --clear-groups ${process.execPath} bin/step.mjs 3 --user --mount --pid --uts --hostname rootless --rootfs ${dir}/rootfs -- sh -c 'id -u; hostname; cat /proc/self/uid_map'`);
  } finally {
    sh(`rm -rf ${dir}`);
  }
  assert.is(r.code, 0, r.stderr);
  const [uid, hostname, map] = r.stdout.trim().split('\n');
  assert.is(uid, '0');
  assert.is(hostname, 'rootless');
  assert.equal(map!.trim().split(/\s+/), ['0', '65534', '1']);
});

test("--all: the lesson's full clone() call; the kernel is the host's", async () => {
  const r = await runStep(3, ['--all', '--hostname', 'hello', '--', 'sh', '-c', 'hostname; echo $$; uname -r'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n'), ['hello', '1', sh('uname -r').stdout.trim()]);
});

test('the step shows the clone flags and the unshare command', async () => {
  const r = await runStep(3, ['--uts', '--net', '--', 'true'], {});
  assert.is(r.code, 0);
  assert.match(r.stderr, /clone\(CLONE_NEWUTS\|CLONE_NEWNET\)/);
  assert.match(r.stderr, /\$ unshare --fork --kill-child=SIGKILL --uts --net --root=\S+ -- true/);
});

test('bad input: a bad hostname and a missing command are clear', async () => {
  const bad = await runStep(3, ['--uts', '--hostname', 'no_such host!', '--', 'true'], { env });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /'no_such host!' is not a valid hostname/);
  const missing = await runStep(3, ['--pid', '--', 'no-such-command'], { env });
  assert.is(missing.code, 127);
  assert.match(missing.stderr, /no-such-command: command not found/);
});

test.run();
