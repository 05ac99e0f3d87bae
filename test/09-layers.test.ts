// Step 09's runtime proven with real overlays and real jails: two jails on
// one image see only their own writes and deletions, the image's layers stay
// byte-for-byte the same, the overlay lives only in the jail's mount
// namespace and goes with it; --keep leaves an upper in overlayfs's form
// (what commit takes), clean removes a killed jail's dir but not a kept one;
// every lock of step 08 holds on an overlay root, --privileged works too, so
// does the chowned-copy fallback and the Debian image; bad input is one
// sentence and leaves nothing. A JAIL_HOME of its own under /var/tmp (but
// for the Debian image, which lives where step 01 built it).
//   node --import tsx test/09-layers.test.ts -c=false
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { getXattr, listXattrs, makedev, mknod, S_IFCHR, setXattr } from '../lib/libc.ts';
import { isAlive, PREFIX } from '../lib/state.ts';
import { cleanCgroups } from '../steps/06-cgroups/removal.ts';
import { capabilitiesIn, capabilityMask, DOCKER_DEFAULT_CAPS } from '../steps/08-hardening/capabilities.ts';
import { layerDiffId } from '../steps/09-layers/layers.ts';
import { cleanJailDirs } from '../steps/09-layers/overlay.ts';
import { addLayer, ensureImage, layerDirs, overlayRoot, readImage, storeTempPath, writeImage, type Image } from '../steps/09-layers/store.ts';
import { isRoot, jailSuite, repo, runStep, stepArgv, waitFor } from './helpers.ts';

const home = isRoot ? mkdtempSync('/var/tmp/baj-test-09l-') : '/nonexistent';
if (isRoot) chmodSync(home, 0o755); // the jail's root walks through it to its layers
process.env.JAIL_HOME = home;
process.env.JAIL_QUIET = '1';
const DEFAULT_HOME = '/var/lib/build-a-jail';
const IMAGE = 't09-stack';

const test = jailSuite('step 09: a jail on an overlay');
test.after(() => {
  if (isRoot) rmSync(home, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// The test image: busybox, then two layers made by hand in overlayfs's form
//   mid  /data/{keep,victim,gone}.txt, /opq/{a,b}
//   top  /data/top.txt, a whiteout of /data/gone.txt, /opq opaque with only c

function write(path: string, text: string): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
}

async function addHandmadeLayer(fill: (dir: string) => void): Promise<string> {
  const dir = storeTempPath('test');
  mkdirSync(dir, { mode: 0o755 });
  fill(dir);
  const diffId = await layerDiffId(dir);
  addLayer(dir, diffId);
  return diffId;
}

test.before(async () => {
  if (!isRoot) return;
  const busybox = await ensureImage('busybox');
  const mid = await addHandmadeLayer((d) => {
    for (const f of ['keep', 'victim', 'gone']) write(join(d, 'data', `${f}.txt`), `${f}\n`);
    for (const f of ['a', 'b']) write(join(d, 'opq', f), `${f}\n`);
  });
  const top = await addHandmadeLayer((d) => {
    write(join(d, 'data/top.txt'), 'top\n');
    mknod(join(d, 'data/gone.txt'), S_IFCHR, makedev(0, 0));
    write(join(d, 'opq/c'), 'c\n');
    // both spellings: a jail with a user namespace mounts with userxattr and reads only user.overlay.*
    for (const x of ['trusted.overlay.opaque', 'user.overlay.opaque']) setXattr(join(d, 'opq'), x, 'y');
  });
  writeImage({ ...busybox, name: IMAGE, layers: [...busybox.layers, mid, top], created: new Date().toISOString(), builtin: undefined, parent: 'busybox' } as Image);
});

// ---------------------------------------------------------------------------
// Helpers

/** Every entry of the image's layers: name, type, mode, owner, size, times, device, xattrs and content. */
function fingerprint(image: Image): string {
  const h = createHash('sha256');
  const walk = (p: string) => {
    const s = lstatSync(p, { bigint: true });
    const xattrs = listXattrs(p).map((x) => `${x}=${getXattr(p, x)?.toString('hex')}`);
    h.update(`${p}\0${s.mode}\0${s.uid}:${s.gid}\0${s.size}\0${s.mtimeNs}\0${s.ctimeNs}\0${s.rdev}\0${s.nlink}\0${xattrs.join(',')}\n`);
    if (s.isFile()) h.update(readFileSync(p));
    if (s.isDirectory()) for (const name of readdirSync(p).sort()) walk(join(p, name));
  };
  for (const dir of layerDirs(image)) walk(dir);
  return h.digest('hex');
}

/** Overlay mounts on this JAIL_HOME in any mount namespace of the host's processes (findmnt -t overlay, everywhere). */
function overlayMounts(): string[] {
  const found = new Set<string>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
        if (line.includes(' - overlay ') && line.includes(home)) found.add(line.split(' - ')[1]!);
      }
    } catch {}
  }
  return [...found];
}

const jailDirs = (): string[] => (existsSync(overlayRoot()) ? readdirSync(overlayRoot()).sort() : []);

/** Runs a shell line in a step-09 jail; fails the test on a non-zero exit. */
async function inJail(flags: string[], script: string, env: Record<string, string> = {}): Promise<string> {
  const r = await runStep(9, [...flags, '--', 'sh', '-c', script], { env });
  assert.is(r.code, 0, `step 9 ${flags.join(' ')} -- sh -c '${script}': exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

interface Background {
  child: ChildProcess;
  output: () => string;
  /** Lets the jail's `read` return, and waits for its launcher's exit status. */
  finish: () => Promise<number>;
}

/** A jail whose script ends in `echo ready; read x`: it runs until finish(). */
async function startJail(flags: string[], script: string): Promise<Background> {
  const [cmd, ...args] = stepArgv(9, ...flags, '--', 'sh', '-c', `${script}; echo ready; read x`);
  const child = spawn(cmd!, args, { cwd: repo, env: process.env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  child.stdin!.on('error', () => {}); // a launcher killed by the test no longer reads
  const exited = new Promise<number>((resolve) => child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
  await Promise.race([waitFor('the background jail to be ready', () => out.includes('ready\n'), 30_000), exited.then((c) => assert.unreachable(`the background jail exited ${c}: ${err}`))]);
  return {
    child,
    output: () => out,
    finish: async () => {
      child.stdin!.end('\n');
      return exited;
    },
  };
}

const DOCKER = capabilityMask(DOCKER_DEFAULT_CAPS);
const field = (text: string, name: string): string => text.match(new RegExp(`^${name}:\\s*(\\S+)`, 'm'))?.[1] ?? '';

// ---------------------------------------------------------------------------

test("two jails on one image: A's write and deletion are in A's upper only, B and the image never see them, and no overlay is left", async () => {
  const image = readImage(IMAGE);
  const before = fingerprint(image);
  const a = await startJail(['--image', IMAGE, '--name', 't9a'], 'echo a > /data/only-a; rm /data/victim.txt; echo more >> /data/keep.txt; ls /opq; ls /data');
  try {
    assert.match(a.output(), /^c\nkeep.txt\nonly-a\ntop.txt\nready\n$/, "the layers stack: top's whiteout and opaque dir hide what mid has");
    // where A's overlay lives: in its own mount namespace, never in the host's
    assert.not.ok(readFileSync('/proc/self/mountinfo', 'utf8').includes(' - overlay '), "no overlay in the host's mount table");
    const mounts = overlayMounts();
    assert.is(mounts.length, 1, `one overlay, A's: ${mounts.join('\n')}`);
    assert.match(mounts[0]!, /upperdir=[^,]*\/overlay\/t9a\/upper,/);
    const upper = join(overlayRoot(), 't9a/upper');
    assert.is(readFileSync(join(upper, 'data/only-a'), 'utf8'), 'a\n');
    assert.ok(lstatSync(join(upper, 'data/victim.txt')).isCharacterDevice(), 'the deletion is a whiteout in the upper');

    const b = await inJail(['--image', IMAGE, '--name', 't9b'], 'ls /data; cat /data/victim.txt /data/keep.txt');
    assert.is(b, 'keep.txt\ntop.txt\nvictim.txt\nvictim\nkeep\n', "B sees none of A's changes");
    for (const dir of layerDirs(image)) assert.not.ok(existsSync(join(dir, 'data/only-a')), `${dir} has no only-a`);
    assert.is(readFileSync(join(layerDirs(image)[1]!, 'data/victim.txt'), 'utf8'), 'victim\n');
    assert.is(readFileSync(join(layerDirs(image)[1]!, 'data/keep.txt'), 'utf8'), 'keep\n', 'the append was a copy-up');
  } finally {
    assert.is(await a.finish(), 0);
  }
  await waitFor('every overlay to go', () => overlayMounts().length === 0, 5000);
  assert.equal(jailDirs(), [], 'both jails removed their dirs');
  assert.is(fingerprint(image), before, "the image's layers are byte-for-byte the same");
});

test('--keep: the upper stays in overlayfs form (a deletion is a 0/0 character device owned by 0), jail.json says kept; clean leaves it', async () => {
  await inJail(['--image', IMAGE, '--name', 't9k', '--keep'], 'rm /data/victim.txt; echo new > /data/new.txt; rm -r /opq; mkdir /opq');
  const dir = join(overlayRoot(), 't9k');
  const whiteout = lstatSync(join(dir, 'upper/data/victim.txt'));
  assert.ok(whiteout.isCharacterDevice() && whiteout.rdev === 0, 'a whiteout: char device 0/0');
  assert.equal([whiteout.uid, whiteout.gid], [0, 0], "root in the jail is 0 on disk, through the idmapped mount");
  assert.is(lstatSync(join(dir, 'upper/data/new.txt')).uid, 0);
  assert.is(getXattr(join(dir, 'upper/opq'), 'user.overlay.opaque')?.toString(), 'y', 'a dir made anew is opaque: user.overlay.* under userxattr');
  const state = JSON.parse(readFileSync(join(dir, 'jail.json'), 'utf8'));
  assert.is(state.kept, true);
  assert.is(state.image, IMAGE);
  assert.equal(state.layers, readImage(IMAGE).layers);
  assert.equal(cleanJailDirs(), []);
  assert.ok(existsSync(join(dir, 'upper')), 'clean leaves a kept jail alone');
  const again = await runStep(9, ['--image', IMAGE, '--name', 't9k', '--', 'true']);
  assert.is(again.code, 2);
  assert.match(again.stderr, /there is a kept jail named t9k/);
  assert.is((await runStep(9, ['rm', 't9k'])).code, 0);
  assert.not.ok(existsSync(dir));
});

test("clean removes the dir of a jail whose launcher was SIGKILLed (not kept), and nothing else", async () => {
  const kept = await runStep(9, ['--image', IMAGE, '--name', 't9k2', '--keep', '--', 'true']);
  assert.is(kept.code, 0, kept.stderr);
  const x = await startJail(['--image', IMAGE, '--name', 't9x'], 'true');
  const launcher = x.child.pid!;
  process.kill(launcher, 'SIGKILL');
  await x.finish();
  await waitFor('the jail to die with its launcher', () => !isAlive(launcher) && overlayMounts().length === 0, 5000);
  assert.ok(existsSync(join(overlayRoot(), 't9x/upper')), "a SIGKILLed launcher's cleanup never ran");
  const said = cleanJailDirs();
  assert.equal(said.length, 1, said.join('\n'));
  assert.match(said[0]!, /t9x/);
  assert.equal(jailDirs(), ['t9k2']);
  await cleanCgroups((jail) => jail === `${PREFIX}-t9x`); // the killed launcher's other leftover
  assert.is((await runStep(9, ['rm', 't9k2'])).code, 0);
});

test("the locks hold on an overlay root: Docker's 14 capabilities, seccomp, root is a non-zero host uid; and --privileged works on one too", async () => {
  const locked = await inJail(['--image', IMAGE], 'grep -E "^(CapBnd|CapEff|Seccomp|NoNewPrivs):" /proc/self/status; cat /proc/self/uid_map');
  assert.is(BigInt('0x' + field(locked, 'CapBnd')), DOCKER, 'CapBnd is exactly the 14');
  assert.is(BigInt('0x' + field(locked, 'CapEff')), DOCKER);
  assert.is(field(locked, 'Seccomp'), '2');
  assert.is(field(locked, 'NoNewPrivs'), '1');
  const [inside, outside] = locked.match(/^\s*(\d+)\s+(\d+)\s+65536$/m)!.slice(1).map(Number);
  assert.is(inside, 0);
  assert.ok(outside! > 0, `root maps to host uid ${outside}`);
  const refused = await runStep(9, ['--image', IMAGE, '--', 'sh', '-c', 'mount -t tmpfs none /mnt']);
  assert.is.not(refused.code, 0, 'mount is refused in the locked jail');

  const open = await inJail(['--image', IMAGE, '--privileged', '--name', 't9p', '--keep'], 'grep CapBnd /proc/self/status; cat /proc/self/uid_map; rm -r /opq; mkdir /opq; mount -t tmpfs none /mnt && echo mounted');
  assert.ok(capabilitiesIn(field(open, 'CapBnd')).some((c) => !DOCKER_DEFAULT_CAPS.includes(c)), 'more than the 14');
  assert.match(open, /^\s*0\s+0\s+4294967295$/m, 'root is the host root');
  assert.match(open, /mounted/);
  const opq = join(overlayRoot(), 't9p/upper/opq');
  assert.is(getXattr(opq, 'trusted.overlay.opaque')?.toString(), 'y', "host root's overlay marks in trusted.overlay.*");
  assert.is(getXattr(opq, 'user.overlay.opaque'), undefined);
  assert.is((await runStep(9, ['rm', 't9p'])).code, 0);
});

test('without idmapped mounts (JAIL_NO_IDMAP=1): chowned copies of the layers; a kept upper is owned by 0 again, the layers are untouched', async () => {
  const image = readImage(IMAGE);
  const before = fingerprint(image);
  const out = await inJail(['--image', IMAGE, '--name', 't9f', '--keep'], 'id -u; ls /opq; echo f > /data/f; rm /data/keep.txt', { JAIL_NO_IDMAP: '1' });
  assert.is(out, '0\nc\n');
  const upper = join(overlayRoot(), 't9f/upper');
  assert.equal([lstatSync(join(upper, 'data/f')).uid, lstatSync(join(upper, 'data/keep.txt')).uid, lstatSync(upper).uid], [0, 0, 0]);
  assert.is(fingerprint(image), before);
  assert.is((await runStep(9, ['rm', 't9f'])).code, 0);
});

test('a kept upper commits into an image that runs with its changes (whiteouts and opaque dirs under userxattr)', async () => {
  await inJail(['--image', IMAGE, '--name', 't9c', '--keep'], 'rm /data/top.txt; rm -r /opq; mkdir /opq; echo d > /opq/d');
  const commit = await runStep(9, ['commit', 't9c', 't09-committed']);
  assert.is(commit.code, 0, commit.stderr);
  assert.is(await inJail(['--image', 't09-committed'], 'ls /data /opq'), '/data:\nkeep.txt\nvictim.txt\n\n/opq:\nd\n');
  assert.is((await runStep(9, ['rm', 't9c'])).code, 0);
  assert.is((await runStep(9, ['rmi', 't09-committed'])).code, 0);
});

test('the Debian image runs on an overlay (cat /etc/debian_version)', async () => {
  const env = { JAIL_HOME: DEFAULT_HOME };
  if (!existsSync(join(DEFAULT_HOME, 'rootfs/debian/etc/debian_version'))) {
    const built = await runStep(1, ['--debian'], { env, timeoutMs: 1_200_000 });
    assert.is(built.code, 0, built.stderr);
  }
  const r = await runStep(9, ['--image', 'debian', '--', 'cat', '/etc/debian_version'], { env, timeoutMs: 600_000 });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\d+(\.\d+)?\n$/);
});

test('bad input is one sentence, exit 2, and makes nothing: an unknown image, a bad name, --keep without --name, a name in use', async () => {
  const refused = async (args: string[], pattern: RegExp) => {
    const r = await runStep(9, [...args, '--', 'true']);
    assert.is(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.is(r.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1, r.stderr);
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(jailDirs().filter((d) => d !== 't9u'), [], `nothing made for ${args.join(' ')}`);
  };
  await refused(['--image', 'no-such-image'], /no image named no-such-image/);
  await refused(['--image', 'Bad/Name'], /'Bad\/Name' is not an image name/);
  await refused(['--image', IMAGE, '--keep'], /--keep .* give --name/);
  await refused(['--image', IMAGE, '--name', 'Bad_Name'], /not a jail name/);
  const u = await startJail(['--image', IMAGE, '--name', 't9u'], 'true');
  try {
    await refused(['--image', IMAGE, '--name', 't9u'], /a jail named t9u is running already/);
    const rm = await runStep(9, ['rm', 't9u']);
    assert.is(rm.code, 2);
    assert.match(rm.stderr, /still running/);
  } finally {
    assert.is(await u.finish(), 0);
  }
  const verb = await runStep(9, ['commit', 'only-one-word']);
  assert.is(verb.code, 2);
  assert.match(verb.stderr, /commit takes JAIL NAME/);
  assert.equal(jailDirs(), []);
});

test.run();
