import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { assertHostUnchanged, hostState, isRoot, repo, rootSuite, runStep, sh, type HostState } from './helpers.ts';

const test = rootSuite('step 01: rootfs');
const home = isRoot ? mkdtempSync('/tmp/baj-test-home-') : '/nonexistent';
const env = { JAIL_HOME: home, JAIL_QUIET: '1' };
const busybox = join(home, 'rootfs/busybox');
let before: HostState;

test.before.each(() => {
  before = hostState();
});
test.after.each(async () => {
  await assertHostUnchanged(before);
});
test.after(() => rmSync(home, { recursive: true, force: true }));

/** Every symlink below dir, as [path relative to the rootfs, link text]. */
function symlinks(root: string, dir = root): [string, string][] {
  const out: [string, string][] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink()) out.push([p.slice(root.length), readlinkSync(p)]);
    else if (e.isDirectory()) out.push(...symlinks(root, p));
  }
  return out;
}

test('the busybox rootfs runs /bin/sh -c "echo ok" under chroot', async () => {
  const r = await runStep(1, [], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(sh(`chroot ${busybox} /bin/sh -c 'echo ok'`).stdout, 'ok\n');
});

test('every applet is a link to /bin/busybox inside the rootfs, and resolves there', () => {
  const links = symlinks(busybox);
  assert.ok(links.length > 100, `only ${links.length} applet links`);
  for (const [path, target] of links) {
    assert.is(target, '/bin/busybox', `${path} points to ${target}`);
  }
  // resolve each link as the jail would: relative to the rootfs, not the host
  const r = sh(`chroot ${busybox} /bin/sh -c 'for f in /bin/* /sbin/* /usr/bin/* /usr/sbin/*; do [ -x "$f" ] || echo "broken $f"; done'`);
  assert.is(r.stdout, '');
  assert.is(r.code, 0);
});

test('a rebuild swaps the whole tree in one step: bin/sh exists at every moment', async () => {
  writeFileSync(join(busybox, 'root/old-marker'), 'x');
  // a watcher polls the tree as fast as it can while the rebuild runs
  const watcher = spawn('/bin/bash', ['-c', `missing=0; while [ ! -e ${home}/stop ]; do [ -e ${busybox}/bin/sh ] || missing=$((missing+1)); done; echo $missing`]);
  let seen = '';
  watcher.stdout.on('data', (d) => (seen += d));
  const r = await runStep(1, [], { env });
  writeFileSync(join(home, 'stop'), '');
  await new Promise((res) => watcher.on('close', res));
  rmSync(join(home, 'stop'));
  assert.is(r.code, 0, r.stderr);
  assert.is(seen.trim(), '0', 'bin/sh was missing during the rebuild');
  assert.not.ok(existsSync(join(busybox, 'root/old-marker')), 'the old tree is still there');
  assert.equal(readdirSync(join(home, 'rootfs')), ['busybox'], 'a temp tree was left beside the rootfs');
});

test('a build killed half-way leaves the old rootfs intact and no half tree', async () => {
  const child = spawn(process.execPath, ['bin/step.mjs', '1'], { cwd: repo, env: { ...process.env, ...env } });
  // kill it once it has started writing its temp tree
  const deadline = Date.now() + 20_000;
  while (!readdirSync(join(home, 'rootfs')).some((e) => e.includes('.building-')) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  assert.is(sh(`chroot ${busybox} /bin/sh -c 'echo ok'`).stdout, 'ok\n');
  // the next build sweeps the dead build's temp tree away
  const r = await runStep(1, [], { env });
  assert.is(r.code, 0, r.stderr);
  assert.equal(readdirSync(join(home, 'rootfs')), ['busybox']);
});

test('the Debian rootfs (from the debootstrap cache) has apt-get and runs cat /etc/debian_version', async () => {
  const r = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
  assert.is(r.code, 0, r.stderr);
  const debian = join(home, 'rootfs/debian');
  assert.ok(lstatSync(join(debian, 'usr/bin/apt-get')).isFile());
  const v = sh(`chroot ${debian} cat /etc/debian_version`);
  assert.is(v.code, 0);
  assert.match(v.stdout, /^\d+(\.\d+)?\n$|^[a-z]+\/sid\n$/);
  // the second build is a copy from the cache: no debootstrap this time
  const again = await runStep(1, ['--debian'], { env: { JAIL_HOME: home } });
  assert.is(again.code, 0);
  assert.match(again.stderr, /Using the cached debootstrap result/);
  assert.not.match(again.stderr, /\$ debootstrap/);
});

test('bad input: an unknown flag and an unknown step are one clear sentence and a non-zero exit', async () => {
  const flag = await runStep(1, ['--colour'], { env });
  assert.is(flag.code, 2);
  assert.match(flag.stderr, /unknown flag --colour/);
  const step = await runStep(42, [], { env });
  assert.is(step.code, 2);
  assert.match(step.stderr, /there is no step '42'/);
  assert.match(step.stderr, /1  rootfs/);
});

test('bad input: not root is refused before anything is made', async () => {
  const nobodyHome = join(home, 'nobody');
  mkdirSync(nobodyHome, { mode: 0o777 });
  const r = sh(`cd ${repo} && JAIL_HOME=${nobodyHome} setpriv --reuid=65534 --regid=65534 --clear-groups ${process.execPath} bin/step.mjs 1 2>&1`);
  assert.is.not(r.code, 0);
  assert.match(r.stdout, /needs root/);
  assert.match(r.stdout, /sudo/);
  assert.equal(readdirSync(nobodyHome), []);
});

test.run();
