// Step 08's finale: step 07's sshd jail with every lock on. The login works
// with a terminal and says hello, sits inside every lock, and every escape
// of the lab that a shell can try fails from it. --stop ends it cleanly.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { descendantsOf } from '../lib/proc.ts';
import { isAlive, jailHome, rootfsDir, runDir } from '../lib/state.ts';
import { capabilityMask, DOCKER_DEFAULT_CAPS } from '../steps/08-hardening/capabilities.ts';
import { demoDir } from '../steps/07-ssh-demo/root.ts';
import { sshCommand } from '../steps/07-ssh-demo/sshd.ts';
import { isRoot, jailSuite, runStep, sh } from './helpers.ts';

const env = { JAIL_QUIET: '1' };
const test = jailSuite('step 08: the locked ssh finale', { afterEach: () => runStep(8, ['--ssh', '--stop'], { env }) });

test.before(async () => {
  if (!isRoot) return;
  assert.is((await runStep(8, ['--ssh', '--stop'], { env })).code, 0);
  const built = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
  assert.is(built.code, 0, built.stderr);
});

function ssh(command: string, extra: string[] = []) {
  const [cmd, ...args] = sshCommand(extra);
  return spawnSync(cmd!, [...args, command], { encoding: 'utf8', timeout: 20_000 });
}

async function up(flags: string[] = []): Promise<void> {
  const r = await runStep(8, ['--ssh', '--detach', ...flags], { env, timeoutMs: 180_000 });
  assert.is(r.code, 0, r.stderr);
}

test('ssh -p 23322 root@127.0.0.1 works with a pty, hostname is hello, and PID 1 is the locked god process', async () => {
  await up();
  assert.is(ssh('hostname').stdout, 'hello\n');
  const tty = ssh('tty; test -t 0 && echo is-a-tty', ['-tt']);
  assert.match(tty.stdout, /\/dev\/pts\/\d+/);
  assert.match(tty.stdout, /is-a-tty/);
  assert.match(ssh('cat /proc/1/cmdline | tr "\\0" " "').stdout, /08-hardening-init-[0-9a-f]{12}\.[cm]js/);
});

test("the login sits inside every lock: Docker's 14, no_new_privs, seccomp, and root is an unprivileged uid outside", async () => {
  await up();
  const status = ssh('grep -E "^(CapBnd|CapEff|CapAmb|NoNewPrivs|Seccomp):" /proc/self/status; cat /proc/self/uid_map').stdout;
  const field = (name: string) => status.match(new RegExp(`^${name}:\\s+(\\S+)$`, 'm'))?.[1];
  assert.is(BigInt('0x' + field('CapBnd')), capabilityMask(DOCKER_DEFAULT_CAPS), status);
  assert.is(BigInt('0x' + field('CapEff')), capabilityMask(DOCKER_DEFAULT_CAPS), status);
  assert.is(field('CapAmb'), '0000000000000000');
  assert.is(field('NoNewPrivs'), '1');
  assert.is(field('Seccomp'), '2');
  const map = status.trim().split('\n').pop()!.trim().split(/\s+/).map(Number);
  assert.is(map[0], 0);
  assert.ok(map[1]! > 0, `root inside is host uid ${map[1]}`);
});

test("every escape of the lab that a shell can try fails from the login", async () => {
  // things the escapes would have to find on the host, made by the test for the purpose
  const marker = join(jailHome(), 'lab', `ssh-marker-${process.pid}`);
  mkdirSync(join(jailHome(), 'lab'), { recursive: true });
  writeFileSync(marker, 'a host file the jail must not read\n');
  const link = 'baj-lab9';
  sh(`ip link add ${link} type bridge`); // a link of the test's own: --net host shares the host's links
  const disk = statSync(jailHome()).dev;
  const [major, minor] = [Math.floor(disk / 256) & 0xfff, (disk & 0xff) | ((disk >> 12) & ~0xff)];
  try {
    await up();
    const tries: [string, string][] = [
      ['core_pattern opens for writing', ': >> /proc/sys/kernel/core_pattern'],
      ['a fresh proc mounts', 'mkdir -p /tmp/p && mount -t proc proc /tmp/p'],
      ['a v1 cgroup hierarchy mounts', 'mkdir -p /tmp/c && mount -t cgroup -o memory none /tmp/c'],
      ['a nested user namespace', 'unshare -U -r true'],
      ["a node for the host's disk opens", `mknod /tmp/disk b ${major} ${minor} && head -c 512 /tmp/disk >/dev/null`],
      ["the host's link changes (CAP_NET_ADMIN)", `ip link set ${link} mtu 1280`],
      // Perl is in every Debian (perl-base): the calls a shell has no command for
      ["step 02's chroot escape finds the host", `perl -e 'mkdir "/tmp/x"; chroot "/tmp/x" or die; chdir ".." for 1..64; chroot "." or die; exit(-e "${marker}" ? 0 : 1)'`],
      ['open_by_handle_at opens the host filesystem', `perl -e 'open(my $d, "<", "/") or die; my $h = pack("LlLL", 8, 1, 2, 0); my $fd = syscall(304, fileno($d), $h, 0x10000); exit($fd >= 0 ? 0 : 1)'`],
      ["root's keyring is readable", `perl -e 'exit(syscall(250, 0, -4, 0) >= 0 ? 0 : 1)'`], // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING)
    ];
    for (const [claim, command] of tries) {
      const r = ssh(`${command}; echo "rc=$?"`);
      assert.match(r.stdout, /rc=[1-9]\d*\n$/, `${claim}: it worked from the login (${r.stdout}${r.stderr})`);
    }
    assert.is(readFileSync(`/sys/class/net/${link}/mtu`, 'utf8').trim(), '1500', "the host's link is unchanged");
  } finally {
    sh(`ip link del ${link}`);
    rmSync(marker, { force: true });
    rmSync(join(jailHome(), 'lab'), { recursive: true, force: true });
  }
});

test("the root is step 07's overlay of the Debian tree, mounted by the jail's own root (userxattr) on idmapped dirs: a file root writes is uid 0 on disk, in the demo's upper", async () => {
  await up();
  const r = ssh('touch /etc/made-by-locked-root && awk \'$2 == "/" { print $1 }\' /proc/mounts && grep -c userxattr /proc/mounts');
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout, 'overlay\n1\n', `the jail's / is an overlay with userxattr: ${r.stdout}`);
  const made = statSync(join(demoDir(), 'upper/etc/made-by-locked-root'));
  assert.is(made.uid, 0, "the jail's root (an unprivileged uid outside) wrote it through the idmapped dir: uid 0 on disk");
  assert.not.ok(existsSync(join(rootfsDir('debian'), 'etc/made-by-locked-root')), 'the Debian tree is untouched');
});

test('--stop ends sshd, the locked jail and every session; nothing of it is left', async () => {
  await up();
  const launcher = Number(readFileSync(join(runDir(), 'ssh-demo.pid'), 'utf8'));
  const jail = descendantsOf(launcher);
  assert.ok(jail.length >= 3, `the launcher's processes: ${jail}`);
  assert.is((await runStep(8, ['--ssh', '--stop'], { env })).code, 0);
  assert.equal([launcher, ...jail].filter(isAlive), [], 'the launcher, the init, sshd and the sessions are gone');
  assert.not.ok(ssh('true', ['-o', 'ConnectTimeout=1']).status === 0, 'nobody answers on 23322');
});

test('bad input: a command, --net none, and an unknown capability are refused before anything is made', async () => {
  for (const [flags, said] of [
    [['--ssh', '--', 'ls'], /step 8 runs the lesson's start script; it takes no command/],
    [['--ssh', '--net', 'none'], /--net none would leave no way in for ssh/],
    [['--ssh', '--cap-add', 'FLY'], /'FLY' is not a capability name/],
  ] as const) {
    const r = await runStep(8, [...flags], { env });
    assert.is(r.code, 2, `${flags.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, said);
  }
});

test.run();
