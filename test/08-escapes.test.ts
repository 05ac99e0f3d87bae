// Step 08's escape lab, with real jails: every escape gets out of a
// --privileged jail (where it honestly can: step 02's chroot escape cannot
// after pivot_root, and the test says so) and does not get out of the
// locked default one, stopped by the wall the lab names. An escape this host
// cannot offer is skipped, with the reason printed. After every test the
// host is as it was — including every kernel setting an escape opened for
// writing, byte for byte, and nothing the lab made for it.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as assert from 'uvu/assert';
import { JailError } from '../lib/errors.ts';
import { rootfsDir } from '../lib/state.ts';
import { ESCAPES, type Escape } from '../steps/08-hardening/escapes.ts';
import { LAB_LINK } from '../steps/08-hardening/escapes-shared.ts';
import { pickEscapes, tryEscape, type Attempt, type JailKind, type LabRun } from '../steps/08-hardening/lab.ts';
import { fixtureUnavailable, hostReleaseAgents, labDir, labKeys } from '../steps/08-hardening/lab-fixtures.ts';
import { isRoot, jailSuite, repo, runNode, waitFor } from './helpers.ts';

const test = jailSuite('step 08: the escape lab');
const env = { JAIL_QUIET: '1' };
process.env.JAIL_QUIET = '1'; // tryEscape runs in this process: keep the lesson's output out of the test report

/** Kernel settings the escapes open for writing (or come near), as bytes. */
const SETTINGS = ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/core_pipe_limit', '/proc/sys/kernel/modprobe', '/proc/sys/kernel/sysrq', '/proc/sys/kernel/hotplug'];

/** What the lab could leave or change beyond helpers.ts's hostState(). */
function labState() {
  return {
    settings: Object.fromEntries(SETTINGS.filter((p) => existsSync(p)).map((p) => [p, readFileSync(p).toString('hex')])),
    releaseAgents: hostReleaseAgents(),
    keys: labKeys(),
    labDir: existsSync(labDir()) ? readdirSync(labDir()) : 'absent',
    labLink: existsSync(`/sys/class/net/${LAB_LINK}`),
  };
}

let before: ReturnType<typeof labState>;
test.before.each(() => {
  if (isRoot) before = labState();
});
test.after.each(() => {
  if (!isRoot) return;
  const after = labState();
  // uvu does not print failures in hooks; say it here
  if (JSON.stringify(after) !== JSON.stringify(before)) console.error(`\nthe lab changed the host: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  assert.equal(after, before, 'the lab left something on the host');
});

/** A run that happened: a skip here is a failure, since the test checked first. */
function ran(a: Attempt): LabRun {
  if ('skipped' in a) assert.unreachable(`the ${a.jail} run was skipped: ${a.skipped}`);
  return a as LabRun;
}

async function attempt(escape: Escape, jail: JailKind): Promise<LabRun> {
  const run = ran(await tryEscape(escape, jail));
  assert.is(run.status, 0, `the ${jail} jail's payload exited ${run.status}`);
  assert.is(run.result.name, escape.name);
  return run;
}

function assertStopped(run: LabRun, escape: Escape): void {
  assert.not.ok(run.result.out, `${escape.name} got out of the ${run.jail} jail: ${run.result.evidence}`);
  const first = run.stoppedBy[0];
  assert.ok(first, `no wall of the ${run.jail} jail is named for ${escape.name} (${run.result.error}: ${run.result.evidence})`);
  // the wall the lab names first must be the one that answered: its errno
  if (first.errno) assert.is(run.result.error, first.errno, `${escape.name}: the first wall (${first.label}) answers ${first.errno}, but the attempt saw ${run.result.error}: ${run.result.evidence}`);
}

const rootfs = rootfsDir('busybox');

for (const escape of ESCAPES) {
  const titles =
    escape.name === 'chroot'
      ? ["chroot: step 02's escape lands in the jail's own root in both jails — pivot_root stops it"]
      : [`${escape.name}: gets out of a --privileged jail`, `${escape.name}: does not get out of the locked jail`];
  const missing = isRoot ? fixtureUnavailable(escape.fixture, rootfs) : undefined;
  if (missing) {
    console.log(`step 08: ${escape.name} skipped on this host: ${missing}`);
    for (const t of titles) test.skip(t, () => {});
    continue;
  }
  if (escape.name === 'chroot') {
    test(titles[0]!, async () => {
      for (const jail of ['privileged', 'locked'] as const) {
        const run = await attempt(escape, jail);
        assertStopped(run, escape);
        assert.equal(run.stoppedBy.map((s) => s.wall), ['pivot_root']);
        assert.match(run.result.evidence, /landed on the jail's own \/: bin .*linuxrc/);
      }
    });
    continue;
  }
  test(titles[0]!, async () => {
    const run = await attempt(escape, 'privileged');
    assert.ok(run.result.out, `${escape.name} did not get out of --privileged (${run.result.error}): ${run.result.evidence}`);
    assert.equal(run.stoppedBy, []);
  });
  test(titles[1]!, async () => {
    assertStopped(await attempt(escape, 'locked'), escape);
  });
}

test('the host confirms what the privileged jail claims: the marker secret, the MTU, the key', async () => {
  const byName = (n: string) => ESCAPES.find((e) => e.name === n)!;
  const net = await attempt(byName('net_admin'), 'privileged');
  assert.match(net.result.evidence, new RegExp(`the host sees ${LAB_LINK} mtu 1500 -> 1280`));
  if (!fixtureUnavailable('ext4-marker', rootfs)) {
    const shocker = await attempt(byName('open_by_handle_at'), 'privileged');
    assert.match(shocker.result.evidence, /"[0-9a-f]{24}"/, 'the marker secret, 24 hex digits');
  }
  const locked = await attempt(byName('net_admin'), 'locked');
  assert.match(locked.result.evidence, /mtu 1500 -> 1500/, 'the locked jail changed nothing');
});

test('the lab runs a subset, prints the table with the count, and exits 0', async () => {
  const code = "const { runEscapeLab } = await import('./steps/08-hardening/lab.ts'); process.exitCode = await runEscapeLab({ only: ['core_pattern', 'chroot'] });";
  const r = await runNode(['--input-type=module', '-e', code], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^escape\s+privileged\s+locked\s+stopped by$/m);
  assert.match(r.stdout, /^open \/proc\/sys\/kernel\/core_pattern for writing\s+OUT\s+stopped\s+user namespace, read-only \/proc\/sys$/m);
  assert.match(r.stdout, /^step 02's chroot escape\s+stopped\s+stopped\s+pivot_root \(in both\)$/m);
  assert.match(r.stdout, /^1 of 2 escapes get out without the locks, 0 with them\.$/m);
});

test('an unknown escape is refused with the list of escapes', () => {
  try {
    pickEscapes(['core_pattern', 'no_such_escape']);
    assert.unreachable('no error');
  } catch (err) {
    assert.instance(err, JailError);
    assert.match((err as JailError).message, /no_such_escape/);
    assert.match((err as JailError).hint!, /core_pattern .*keyring/);
    assert.is((err as JailError).exitCode, 2);
  }
});

test("Ctrl-C in the middle of the lab: the jail stops, the lab's link and markers are gone", async () => {
  const code = "const { runEscapeLab } = await import('./steps/08-hardening/lab.ts'); process.exitCode = await runEscapeLab({ only: ['net_admin', 'open_by_handle_at', 'keyring'] });";
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number | null>((r) => child.on('close', (c, sig) => r(c ?? (sig ? 128 + 2 : null))));
  try {
    await waitFor('the lab to make its link', () => existsSync(`/sys/class/net/${LAB_LINK}`), 20_000, 5);
  } catch (err) {
    child.kill('SIGKILL');
    await closed;
    throw err;
  }
  child.kill('SIGINT');
  const status = await closed;
  assert.is(status, 130, stderr);
  assert.not.ok(existsSync(`/sys/class/net/${LAB_LINK}`), 'the link is gone');
});

test.run();
