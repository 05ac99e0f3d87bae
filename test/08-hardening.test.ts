// Step 08 proven from inside real jails: every capability set holds only
// Docker's 14, no_new_privs and a seccomp filter are on, root is an
// unprivileged uid outside, the rootfs is usable through an idmapped mount
// and through the chowned-copy fallback, mount is refused, /proc/sys is
// read-only; --privileged, --cap-add, --cap-drop and --security-opt turn
// each lock the way Docker's flags do; bad input is refused and leaves
// nothing behind (jailSuite compares the host after every test).
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { jailHome, rootfsDir } from '../lib/state.ts';
import { capabilitiesIn, capabilityMask, DOCKER_DEFAULT_CAPS } from '../steps/08-hardening/capabilities.ts';
import { thermalThrottlePaths } from '../steps/08-hardening/paths.ts';
import { jailSuite, runStep, sh } from './helpers.ts';

const test = jailSuite('step 08: the locks');
const env = { JAIL_QUIET: '1' };
const verbose = { JAIL_QUIET: '0', NO_COLOR: '1' };
const DOCKER = capabilityMask(DOCKER_DEFAULT_CAPS);

/** Runs CMD (a shell line) in a step-08 jail; fails the test on a non-zero exit. */
async function inJail(flags: string[], script: string, extraEnv: Record<string, string> = {}): Promise<{ stdout: string; stderr: string }> {
  const r = await runStep(8, [...flags, '--', 'sh', '-c', script], { env: { ...env, ...extraEnv } });
  assert.is(r.code, 0, `npm run step 8 -- ${flags.join(' ')} -- sh -c '${script}': exit ${r.code}\n${r.stderr}`);
  return r;
}

/** The Cap*, NoNewPrivs and Seccomp lines of /proc/self/status, as a record. */
function statusOf(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/^(Cap\w+|NoNewPrivs|Seccomp):\s*(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

const mask = (hex: string): bigint => BigInt('0x' + hex);
const STATUS = 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status';

test("in the default jail every capability set holds only Docker's 14, ambient none, no_new_privs and a seccomp filter", async () => {
  const s = statusOf((await inJail([], STATUS)).stdout);
  for (const set of ['CapBnd', 'CapEff', 'CapPrm', 'CapInh']) {
    const outside = capabilitiesIn(s[set]!).filter((c) => !DOCKER_DEFAULT_CAPS.includes(c));
    assert.equal(outside, [], `${set} ${s[set]} holds ${outside.join(' ')}`);
  }
  assert.is(mask(s.CapEff!), DOCKER, 'CapEff is exactly the 14');
  assert.is(mask(s.CapBnd!), DOCKER, 'CapBnd is exactly the 14');
  assert.is(mask(s.CapAmb!), 0n);
  assert.is(s.NoNewPrivs, '1');
  assert.is(s.Seccomp, '2');
});

test("the init's other threads are filtered too (TSYNC), its main thread holds the 14, and its memory is out of reach", async () => {
  const r = await inJail([], 'head -c1 /proc/1/environ || echo environ refused; for t in /proc/1/task/*; do grep -E "^(Seccomp|NoNewPrivs):" $t/status | tr "\\n" " "; echo; done; grep CapBnd /proc/1/status');
  // PR_SET_DUMPABLE 0: reading another process's environ needs ptrace access, and for a non-dumpable one CAP_SYS_PTRACE
  assert.match(r.stdout, /^environ refused\n/);
  assert.match(r.stderr, /environ: Permission denied/);
  const threads = r.stdout.trim().split('\n').slice(1, -1);
  assert.ok(threads.length >= 2, 'the Node init has several threads');
  for (const t of threads) assert.match(t, /Seccomp:\s+2\s+NoNewPrivs:\s+1|NoNewPrivs:\s+1\s+Seccomp:\s+2/, t);
  assert.is(mask(r.stdout.trim().split('\n').pop()!.split(/\s+/)[1]!), DOCKER);
});

test('root inside is an unprivileged uid outside: uid_map maps 0 to a non-zero host uid', async () => {
  const r = await inJail([], 'id -u; cat /proc/self/uid_map /proc/self/gid_map');
  const [uid, uidMap, gidMap] = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  assert.equal(uid, [0]);
  assert.is(uidMap![0], 0);
  assert.ok(uidMap![1]! > 0, `root maps to host uid ${uidMap![1]}`);
  assert.is(uidMap![2], 65536);
  assert.is(gidMap![1], uidMap![1]);
});

test('the busybox and the Debian rootfs both run locked', async () => {
  const busybox = await inJail([], 'busybox | head -1; grep Seccomp: /proc/self/status');
  assert.match(busybox.stdout, /^BusyBox v[\d.]+.*\nSeccomp:\s+2\n$/);
  if (!existsSync(join(rootfsDir('debian'), 'etc/debian_version'))) {
    const built = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
    assert.is(built.code, 0, built.stderr);
  }
  const debian = await inJail(['--debian'], 'cat /etc/debian_version; id -u; grep Seccomp: /proc/self/status; ls -ln /etc/passwd');
  assert.match(debian.stdout, /^\d+\.\d+\n0\nSeccomp:\s+2\n-rw-r--r-- +1 0 +0 .*\/etc\/passwd\n$/);
});

// x86_64 numbers, through Perl (in every Debian): calls a shell has no command for. The filter answers
// before the kernel looks: socket(AF_VSOCK) never reaches the code that would load the vsock module.
(process.arch === 'x64' ? test : test.skip)("seccomp refuses what Docker's profile refuses beyond mount: vsock sockets, NUMA memory calls, userfaultfd, pidfd_getfd, vhangup (EPERM); an AF_INET socket still opens (x86_64's syscall numbers)", async () => {
  const calls: [string, number, number, number][] = [
    ['socket(AF_VSOCK)', 41, 40, 1], ['socket(AF_INET)', 41, 2, 1], ['move_pages', 279, 0, 0], ['mbind', 237, 0, 0],
    ['userfaultfd', 323, 0, 0], ['pidfd_getfd', 438, -1, 0], ['vhangup', 153, 0, 0],
  ];
  const perl = calls.map(([name, nr, a, b]) => `printf("${name}=%s\\n", syscall(${nr}, ${a}, ${b}, 0) >= 0 ? "ok" : $!+0);`).join(' ');
  const r = await inJail(['--debian'], `perl -e '${perl}'`);
  const said = Object.fromEntries([...r.stdout.matchAll(/^(.+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  assert.equal(said, { 'socket(AF_VSOCK)': '1', 'socket(AF_INET)': 'ok', move_pages: '1', mbind: '1', userfaultfd: '1', pidfd_getfd: '1', vhangup: '1' }, r.stdout);
});

// Docker's per-CPU thermal_throttle masks exist only where the CPU's driver made the directories
const throttled = thermalThrottlePaths();
(throttled.length ? test : test.skip)("each CPU's thermal_throttle directory is masked, as Docker masks it (skipped where the CPUs have none)", async () => {
  const r = await inJail([], `ls -A ${throttled[0]} | wc -l; grep -c " ${throttled[0]} ro,.* - tmpfs " /proc/self/mountinfo`);
  assert.is(r.stdout, '0\n1\n');
});

test('mount is refused: mount -t tmpfs none /mnt fails, and so does a new user namespace', async () => {
  const r = await inJail([], 'mount -t tmpfs none /mnt; echo mount=$?; unshare -U true; echo unshare=$?');
  assert.match(r.stdout, /mount=[1-9]/);
  assert.match(r.stdout, /unshare=[1-9]/);
});

test('/proc/sys is read-only and the masked paths show nothing', async () => {
  // Opening for append writes nothing, even where the open would succeed.
  // vm.swappiness is the host's: the jail's root may not even ask (EACCES,
  // the user namespace comes first).
  const r = await inJail([], '(: >> /proc/sys/vm/swappiness); echo host=$?; wc -c < /proc/keys; ls -A /sys/firmware | wc -l; grep -E " /proc/sys | /proc/keys | /sys/firmware " /proc/self/mountinfo');
  assert.match(r.stderr, /swappiness: Permission denied/);
  assert.match(r.stdout, /^host=[1-9]\n0\n0\n/);
  assert.match(r.stdout, / \/proc\/sys ro,/);
  assert.match(r.stdout, / \/sys\/firmware ro,.* - tmpfs /);
  // ping_group_range belongs to the jail's own network namespace: with
  // NET_ADMIN its root may write it, and only the read-only mount refuses
  const own = await inJail(['--cap-add', 'NET_ADMIN'], '(: >> /proc/sys/net/ipv4/ping_group_range); echo own=$?');
  assert.match(own.stderr, /ping_group_range: Read-only file system/);
  assert.match(own.stdout, /own=[1-9]/);
});

test("--privileged is steps 04-07's jail: the host root's CapEff, no seccomp, no user namespace", async () => {
  const host = statusOf(readFileSync('/proc/self/status', 'utf8'));
  const r = await inJail(['--privileged'], `${STATUS}; cat /proc/self/uid_map`);
  const s = statusOf(r.stdout);
  assert.is(s.CapEff, host.CapEff);
  assert.is(s.Seccomp, '0');
  assert.is(s.NoNewPrivs, '0');
  assert.match(r.stdout, /^\s*0\s+0\s+4294967295$/m);
});

test('--cap-add NET_ADMIN adds exactly it; CAP_NET_ADMIN is the same flag', async () => {
  for (const spelling of ['NET_ADMIN', 'CAP_NET_ADMIN']) {
    const s = statusOf((await inJail(['--cap-add', spelling], STATUS)).stdout);
    assert.is(mask(s.CapEff!), DOCKER | (1n << 12n), spelling);
    assert.is(mask(s.CapBnd!), DOCKER | (1n << 12n), spelling);
  }
});

test('--cap-drop CHOWN removes it, and chown fails', async () => {
  const r = await inJail(['--cap-drop', 'CHOWN'], `${STATUS}; touch /tmp/baj-08-chown; chown 5 /tmp/baj-08-chown; echo chown=$?; rm /tmp/baj-08-chown`);
  const s = statusOf(r.stdout);
  assert.is(mask(s.CapEff!), DOCKER & ~1n);
  assert.match(r.stdout, /chown=[1-9]/);
  assert.match(r.stderr, /Operation not permitted/);
});

test('--security-opt seccomp=unconfined: no filter, every other lock stays', async () => {
  const s = statusOf((await inJail(['--security-opt', 'seccomp=unconfined'], STATUS)).stdout);
  assert.is(s.Seccomp, '0');
  assert.is(s.NoNewPrivs, '1');
  assert.is(mask(s.CapEff!), DOCKER);
});

test('--security-opt no-new-privileges=false: the filter is loaded before the capabilities go, while CAP_SYS_ADMIN may', async () => {
  const s = statusOf((await inJail(['--security-opt', 'no-new-privileges=false'], STATUS)).stdout);
  assert.is(s.NoNewPrivs, '0');
  assert.is(s.Seccomp, '2');
  assert.is(mask(s.CapEff!), DOCKER);
});

test('ping works in bridge mode: NET_RAW is one of the 14 (and without it, it does not)', async () => {
  const r = await inJail(['--net', 'bridge'], 'ping -c 1 -W 3 10.231.0.1');
  assert.match(r.stdout, /1 packets received/);
  const without = await runStep(8, ['--net', 'bridge', '--cap-drop', 'NET_RAW', '--', 'ping', '-c', '1', '-W', '3', '10.231.0.1'], { env });
  assert.is.not(without.code, 0);
});

/** The rootfs as the jail's root uses it: owned by root inside, writable in /tmp (and cleaned up again). */
const ROOTFS_PROBE = 'stat -c %u:%g /bin /etc /root /usr/bin | sort -u; touch /tmp/baj-08-probe && stat -c %u /tmp/baj-08-probe && rm /tmp/baj-08-probe && echo wrote; awk "\\$5 == \\"/\\"" /proc/self/mountinfo';

test('through an idmapped mount the rootfs belongs to root inside, and the disk is not changed', async () => {
  const r = await runStep(8, ['--', 'sh', '-c', ROOTFS_PROBE], { env: verbose });
  assert.is(r.code, 0, r.stderr);
  const cannot = r.stderr.match(/no idmapped mount here \(([^)]+)\)/)?.[1];
  if (cannot) {
    // e.g. the rootfs on 9p or an overlay in test:vm: the fallback must have worked instead
    console.log(`  (this host cannot idmap ${rootfsDir('busybox')}: ${cannot}; checked the fallback instead)`);
    return assert.match(r.stdout, /^0:0\n0\nwrote\n/);
  }
  assert.match(r.stderr, /idmapped mount: uid 0 on disk is uid 0 in the jail/);
  assert.match(r.stdout, /^0:0\n0\nwrote\n/);
  assert.match(r.stdout, /^\S+ \S+ \S+ \S+ \/ \S*idmapped/m, 'the mount of / is idmapped');
  assert.is(statSync(rootfsDir('busybox')).uid, 0, 'the rootfs on disk still belongs to host root');
  assert.not.ok(existsSync(join(rootfsDir('busybox'), 'tmp/baj-08-probe')));
});

test('without idmapped mounts (JAIL_NO_IDMAP=1) a chowned copy is used, and the step says so', async () => {
  const r = await runStep(8, ['--', 'sh', '-c', `${ROOTFS_PROBE}; cat /proc/self/uid_map`], { env: { ...verbose, JAIL_NO_IDMAP: '1' } });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /idmapped mounts: not used \(JAIL_NO_IDMAP=1/);
  assert.match(r.stderr, /chowned copy: /);
  assert.match(r.stdout, /^0:0\n0\nwrote\n/);
  const copy = r.stdout.match(/^\S+ \S+ \S+ (\/\S+) \/ /m)?.[1] ?? '';
  assert.ok(copy.startsWith(join(jailHome(), 'rootfs-shifted') + '/'), `/ is the copy: ${copy}`);
  const base = Number(r.stdout.trim().split('\n').pop()!.trim().split(/\s+/)[1]);
  assert.is(statSync(join(copy, 'bin')).uid, base, "the copy's files belong to the jail's range on the host");
  assert.not.ok(existsSync(join(copy, 'tmp/baj-08-probe')));
  // a second run takes the cached copy
  const again = await runStep(8, ['--', 'true'], { env: { ...verbose, JAIL_NO_IDMAP: '1' } });
  assert.match(again.stderr, /cached \(the source has not changed since\)/);
});

test('on a filesystem without idmapped mounts (ramfs) the step falls back to the copy by itself, and says why', async () => {
  const dir = mkdtempSync('/tmp/baj-08-ramfs-');
  sh(`mount -t ramfs none ${dir} && cp -a ${rootfsDir('busybox')} ${dir}/rootfs`);
  try {
    const r = await runStep(8, ['--rootfs', `${dir}/rootfs`, '--', 'sh', '-c', ROOTFS_PROBE], { env: verbose });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /no idmapped mount here \(mount_setattr: EINVAL\): using a copy/);
    assert.match(r.stdout, /^0:0\n0\nwrote\n/);
  } finally {
    sh(`umount ${dir}; rmdir ${dir}; rm -rf ${join(jailHome(), 'rootfs-shifted')}/rootfs-*`);
  }
});

test('bad input: an unknown capability, --cap-add with --privileged, an unknown --security-opt — one line each, exit 2', async () => {
  for (const [flags, said] of [
    [['--cap-add', 'FLY'], /'FLY' is not a capability name/],
    [['--cap-drop', 'CAP_NOPE'], /'CAP_NOPE' is not a capability name/],
    [['--privileged', '--cap-add', 'NET_ADMIN'], /--cap-add means nothing with --privileged/],
    [['--security-opt', 'apparmor=unconfined'], /--security-opt apparmor=unconfined: not an option/],
  ] as const) {
    const r = await runStep(8, [...flags, '--', 'true'], { env });
    assert.is(r.code, 2, `${flags.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, said);
    assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test('no libseccomp: one clear line that says how to install it, and nothing is made', async () => {
  const r = await runStep(8, ['--', 'true'], { env: { ...env, JAIL_LIBSECCOMP: 'libnope.so.9' } });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: seccomp needs libseccomp, and libnope\.so\.9 cannot be loaded: install libseccomp2 \(sudo apt-get install libseccomp2\)$/m);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  const unconfined = await runStep(8, ['--security-opt', 'seccomp=unconfined', '--', 'true'], { env: { ...env, JAIL_LIBSECCOMP: 'libnope.so.9' } });
  assert.is(unconfined.code, 0, 'without the filter the library is not needed');
});

test.run();
