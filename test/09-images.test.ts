// Step 09's images, proven with the real tools: the store and its built-ins,
// commit of a kept jail's upper (a hand-made one: the runtime that mounts
// the overlay is another module's), rmi, export as an OCI layout that skopeo
// reads, a runc bundle that runc runs, import back (from a layout, an
// oci-archive, docker save archives) into byte-for-byte the same trees, and
// hostile archives refused with nothing left. Everything lives in a
// JAIL_HOME of its own under /var/tmp, removed at the end. No registry, no
// network.
//   node --import tsx test/09-images.test.ts -c=false
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as assert from 'uvu/assert';
import { JailError } from '../lib/errors.ts';
import { getXattr, listXattrs, makedev, mknod, S_IFCHR, setXattr } from '../lib/libc.ts';
import { which } from '../lib/preflight.ts';
import { processStart } from '../lib/proc.ts';
import { rootfsDir } from '../lib/state.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { limitsFromFlags } from '../steps/06-cgroups/flags.ts';
import { exportBundle } from '../steps/09-layers/bundle.ts';
import { clean } from '../steps/09-layers/clean.ts';
import { commitJail } from '../steps/09-layers/commit.ts';
import { imagesCommand, listImages, removeImage } from '../steps/09-layers/images.ts';
import { exportOci } from '../steps/09-layers/oci-export.ts';
import { importImage } from '../steps/09-layers/oci-import.ts';
import {
  checkImageName, ensureImage, imageNames, jailPaths, layerDir, layerDirs, readImage, readJailState, isRunning, tmpDir, writeJailState, type JailState,
} from '../steps/09-layers/store.ts';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarHeader } from '../steps/09-layers/tar.ts';
import { assertHostUnchanged, hostState, isRoot, rootSuite, runNode, sh, type HostState } from './helpers.ts';

// one JAIL_HOME for the file; jailHome() reads the variable on every call
const home = isRoot ? mkdtempSync('/var/tmp/baj-test-09-') : '/nonexistent';
if (isRoot) chmodSync(home, 0o755); // a user namespace's root walks through it to a bundle's rootfs
process.env.JAIL_HOME = home;
process.env.JAIL_QUIET = '1';
const scratch = (name: string) => join(home, 'scratch', name);

const test = rootSuite('09 images: store, commit, export, import, bundle');
let before: HostState;

test.before(async () => {
  if (!isRoot) return;
  mkdirSync(join(home, 'scratch'));
  await buildBusyboxRootfs(rootfsDir('busybox'));
});
test.before.each(() => {
  before = hostState();
});
test.after.each(async () => {
  await assertHostUnchanged(before);
});
test.after(() => {
  if (isRoot) rmSync(home, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Helpers

/** Runs `fn` and expects one JailError with exit status 2 whose message matches. */
async function refused(fn: () => unknown, pattern: RegExp): Promise<JailError> {
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof JailError)) throw err;
    assert.match(err.message, pattern);
    assert.is(err.exitCode, 2, `exit status of: ${err.message}`);
    return err;
  }
  assert.unreachable(`not refused: expected ${pattern}`);
  throw new Error('unreachable');
}

/** Every path under a dir (the store, an export dir): to prove that nothing was made. */
function everything(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries.sort()) {
      const p = join(d, e);
      out.push(p);
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}
const storeState = () => everything(join(home, 'images')).filter((p) => !p.endsWith('/.lock'));

/** A tree as text: every entry's type, mode, owner, mtime, size, content, link, device number and xattrs. */
function treeOf(root: string): string[] {
  return everything(root).map((p) => {
    const st = lstatSync(p);
    const rel = p.slice(root.length + 1);
    const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? `l->${readlinkSync(p)}` : st.isFile() ? `f:${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}:n${st.nlink}` : st.isCharacterDevice() ? `c:${st.rdev}` : st.isFIFO() ? 'p' : '?';
    const xattrs = listXattrs(p).map((x) => `${x}=${getXattr(p, x)!.toString('hex')}`).join(',');
    return `${rel} ${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${Math.floor(st.mtimeMs / 1000)} ${st.isFile() ? st.size : ''} ${xattrs}`;
  });
}

/** A PID that was alive a moment ago and is not now. */
function deadPid(): number {
  const r = spawnSync('/bin/true');
  return r.pid!;
}

const BASE_USR_SBIN = () => readdirSync(join(rootfsDir('busybox'), 'usr/sbin'));

/**
 * A kept jail's upper, as overlayfs would have left it: a new file (with an
 * xattr and a hard link), bin/vi deleted (a whiteout), /usr/sbin removed
 * and made again (opaque) with one file in it, and /mnt made again under a
 * `userxattr` mount (opaque in user.overlay.*).
 */
function makeKeptJail(name: string, launcher: Pick<JailState, 'launcherPid' | 'launcherStart'>): void {
  const { upper, work } = jailPaths(name);
  mkdirSync(join(upper, 'etc'), { recursive: true });
  mkdirSync(work);
  writeFileSync(join(upper, 'etc/motd'), 'made in the jail\n');
  setXattr(join(upper, 'etc/motd'), 'user.baj', 'kept');
  linkSync(join(upper, 'etc/motd'), join(upper, 'etc/motd.again'));
  mkdirSync(join(upper, 'bin'));
  mknod(join(upper, 'bin/vi'), S_IFCHR | 0o644, makedev(0, 0));
  mkdirSync(join(upper, 'usr/sbin'), { recursive: true });
  setXattr(join(upper, 'usr/sbin'), 'trusted.overlay.opaque', 'y');
  setXattr(join(upper, 'usr/sbin'), 'trusted.overlay.origin', Buffer.from([0, 1, 2])); // overlayfs's bookkeeping: not content
  writeFileSync(join(upper, 'usr/sbin/only-me'), '#!/bin/sh\necho only me\n', { mode: 0o755 });
  // a jail with a user namespace mounts its overlay with userxattr: its marks are in user.overlay.*
  mkdirSync(join(upper, 'mnt'));
  setXattr(join(upper, 'mnt'), 'user.overlay.opaque', 'y');
  writeFileSync(join(upper, 'mnt/note'), 'mounted here\n');
  writeJailState({ name, image: 'busybox', ...launcher, kept: true });
}

/** An OCI layout by hand, around layer tars we craft: for the hostile archives. */
function handMadeLayout(dir: string, layers: Buffer[]): void {
  mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
  const put = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const blobs = layers.map((t) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...put(gzipSync(t)) }));
  const diffIds = layers.map((t) => `sha256:${createHash('sha256').update(t).digest('hex')}`);
  const config = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: blobs })));
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] }));
}

/** A tar of hand-written entries. */
function craftTar(entries: (Partial<TarHeader> & { name: string; body?: string })[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const h: TarHeader = { type: 'file', mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: 1_700_000_000, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(), ...e };
    parts.push(encodeHeader(h));
    if (h.type === 'file') parts.push(body, padding(body.length));
  }
  return Buffer.concat([...parts, END_OF_ARCHIVE]);
}

const skopeo = which('skopeo');
const runc = which('runc');
const withSkopeo = skopeo ? test : test.skip;
const withRunc = runc ? test : test.skip;

// ---------------------------------------------------------------------------
// The store

test('images: the built-in busybox is listed, and made from step 01\'s rootfs on first use', async () => {
  assert.ok(listImages().some((i) => i.name === 'busybox'));
  const image = await ensureImage('busybox');
  assert.is(image.layers.length, 1);
  assert.equal(image.config.cmd, ['/bin/sh']);
  assert.ok(existsSync(join(layerDirs(image)[0]!, 'bin/busybox')), 'the layer is a copy of the rootfs');
  assert.ok((await ensureImage('busybox')).created === image.created, 'made once, not again');
  const lines: string[] = [];
  const log = console.log;
  console.log = (line: string) => lines.push(line);
  try {
    assert.is(await imagesCommand(), 0);
  } finally {
    console.log = log;
  }
  assert.match(lines.join('\n'), /^busybox\s+1\s+\S+\s+[0-9a-f]{12}/m);
});

test('a bad image name (../x, A, 65 characters) is refused with exit status 2 and makes nothing', async () => {
  const was = storeState();
  for (const bad of ['../x', 'A', 'a'.repeat(65), 'a/b', '.hidden', 'a..b', '']) {
    await refused(() => checkImageName(bad), /is not an image name/);
    await refused(() => readImage(bad), /is not an image name/);
    await refused(() => exportOci(bad, scratch('never')), /is not an image name/);
    await refused(() => importImage(scratch('never'), bad), /is not an image name/);
    await refused(() => removeImage(bad), /is not an image name/);
  }
  assert.ok(checkImageName('a'.repeat(64)));
  assert.equal(storeState(), was);
  assert.not.ok(existsSync(scratch('never')));
  // and the exit status a learner sees, through lib/errors.ts runMain
  const r = await runNode(['--input-type=module', '-e', "import { runMain } from './lib/errors.ts'; import { rmiCommand } from './steps/09-layers/images.ts'; await runMain(() => rmiCommand('../x'));"], { env: { JAIL_HOME: home } });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /'\.\.\/x' is not an image name/);
});

// ---------------------------------------------------------------------------
// commit and rmi

test('commit turns a kept jail\'s upper into a layer in overlay form: the new file, the whiteout, the opaque dir', async () => {
  makeKeptJail('baj-test-kept', { launcherPid: deadPid(), launcherStart: 1 });
  assert.not.ok(isRunning(readJailState('baj-test-kept')));
  const image = await commitJail('baj-test-kept', 'baj-test-c1');
  const base = readImage('busybox');
  assert.equal(image.layers.slice(0, 1), base.layers);
  assert.is(image.layers.length, 2);
  assert.is(image.parent, 'busybox');
  const [top, bottom] = layerDirs(image);
  assert.is(bottom, layerDir(base.layers[0]!));
  assert.is(readFileSync(join(top!, 'etc/motd'), 'utf8'), 'made in the jail\n');
  assert.is(getXattr(join(top!, 'etc/motd'), 'user.baj')?.toString(), 'kept');
  assert.is(lstatSync(join(top!, 'etc/motd.again')).ino, lstatSync(join(top!, 'etc/motd')).ino, 'the hard link stays one');
  const wh = lstatSync(join(top!, 'bin/vi'));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'bin/vi is a whiteout: a 0/0 character device');
  for (const dir of ['usr/sbin', 'mnt']) {
    for (const mark of ['trusted.overlay.opaque', 'user.overlay.opaque']) {
      assert.is(getXattr(join(top!, dir), mark)?.toString(), 'y', `${dir} is opaque in ${mark}: a lowerdir under either mount`);
    }
  }
  assert.is(getXattr(join(top!, 'usr/sbin'), 'trusted.overlay.origin'), undefined, "overlayfs's bookkeeping is not part of the layer");
  assert.ok(readImage('baj-test-c1'));
});

test('commit is refused, making nothing, for a running jail, a taken name and an unknown jail', async () => {
  makeKeptJail('baj-test-live', { launcherPid: process.pid, launcherStart: processStart(process.pid)! });
  try {
    assert.ok(isRunning(readJailState('baj-test-live')));
    const was = storeState();
    await refused(() => commitJail('baj-test-live', 'baj-test-c2'), /jail baj-test-live is still running/);
    await refused(() => commitJail('baj-test-kept', 'baj-test-c1'), /there is an image named baj-test-c1 already/);
    await refused(() => commitJail('baj-test-nobody', 'baj-test-c3'), /no jail named baj-test-nobody/);
    await refused(() => commitJail('../etc', 'baj-test-c3'), /not a jail name/);
    await refused(() => commitJail('baj-test-kept', 'Bad'), /not an image name/);
    assert.equal(storeState(), was);
  } finally {
    rmSync(jailPaths('baj-test-live').dir, { recursive: true, force: true });
  }
});

test('rmi is refused while a jail or a child image needs the image; removing the child keeps the base\'s layer', async () => {
  await refused(() => removeImage('busybox'), /jail baj-test-kept \(kept\) stands on it/);
  rmSync(jailPaths('baj-test-kept').dir, { recursive: true }); // the jail is gone, its commit stays
  await refused(() => removeImage('busybox'), /image baj-test-c1 was committed on top of it/);
  await refused(() => removeImage('baj-test-none'), /no image named baj-test-none; see npm run step 9 -- images/);
  const c1 = readImage('baj-test-c1');
  await exportOci('baj-test-c1', scratch('oci-c1-first'));
  await importImage(scratch('oci-c1-first'), 'baj-test-c1-copy'); // the same two layers under another name
  assert.equal(await removeImage('baj-test-c1-copy'), [], 'its layers are baj-test-c1\'s too: they stay');
  assert.equal(await removeImage('baj-test-c1'), [c1.layers[1]], 'its own top layer goes');
  assert.not.ok(existsSync(layerDir(c1.layers[1]!)));
  assert.ok(existsSync(layerDir(c1.layers[0]!)), "busybox's layer stays");
  // commit it again for the tests below (the upper is gone: make it anew)
  makeKeptJail('baj-test-kept', { launcherPid: deadPid(), launcherStart: 1 });
  await commitJail('baj-test-kept', 'baj-test-c1');
  rmSync(jailPaths('baj-test-kept').dir, { recursive: true });
});

/** The OCI export of an image, made once per image for the tests that read it. */
const exports = new Map<string, string>();
async function exported(name: string): Promise<string> {
  const dir = scratch(`oci-${name}-${exports.size}`);
  await exportOci(name, dir);
  exports.set(name, dir);
  return dir;
}

// ---------------------------------------------------------------------------
// export --oci

withSkopeo('export --oci writes a layout skopeo reads: its layers, its Cmd, and OCI\'s whiteouts in the layer tar', async () => {
  const dir = await exported('baj-test-c1');
  const inspect = JSON.parse(sh(`skopeo inspect oci:${dir}`).stdout);
  assert.is(inspect.Layers.length, 2);
  const config = JSON.parse(sh(`skopeo inspect --config oci:${dir}`).stdout);
  assert.equal(config.config.Cmd, ['/bin/sh']);
  assert.equal(config.rootfs.diff_ids, readImage('baj-test-c1').layers, 'the diff_ids are the store\'s layer names');
  const topBlob = join(dir, 'blobs/sha256', inspect.Layers[1].slice(7));
  const listing = sh(`tar -tvzf ${topBlob}`);
  assert.is(listing.code, 0, listing.stderr);
  assert.match(listing.stdout, /^-\S+ 0\/0\s+0 .* bin\/\.wh\.vi$/m, 'the whiteout is an empty .wh. file');
  assert.match(listing.stdout, / usr\/sbin\/\.wh\.\.wh\.\.opq$/m, 'the opaque dir has its marker');
  assert.match(listing.stdout, / mnt\/\.wh\.\.wh\.\.opq$/m, 'and so has the one marked under userxattr');
  assert.is(listing.stdout.match(/\.wh\.\.wh\.\.opq$/gm)?.length, 2, 'one marker per opaque dir, whichever way it was marked');
  assert.match(listing.stdout, / etc\/motd$/m);
  assert.not.match(listing.stdout, / bin\/vi$/m);
  const archive = scratch('c1.oci.tar');
  assert.is(sh(`skopeo --insecure-policy copy -q oci:${dir} oci-archive:${archive}`).code, 0);
  assert.ok(existsSync(archive));
});

test('export --oci into a directory that is not empty is refused, and writes nothing', async () => {
  const dir = scratch('full');
  mkdirSync(dir);
  writeFileSync(join(dir, 'mine'), 'keep me\n');
  const was = [...everything(join(home, 'scratch')), ...storeState()];
  await refused(() => exportOci('busybox', dir), /exists and is not empty/);
  assert.equal([...everything(join(home, 'scratch')), ...storeState()], was);
  // an empty one is fine: rename(2) replaces an empty directory
  mkdirSync(scratch('empty'));
  await exportOci('busybox', scratch('empty'));
  assert.ok(existsSync(join(scratch('empty'), 'index.json')));
  assert.equal(readdirSync(tmpDir()), [], 'no note of a half-made export is left');
});

// ---------------------------------------------------------------------------
// import: the round trips

/** Imports into a second, empty store, so that no layer is shared with the first: real trees to compare. */
async function importElsewhere(file: string, name: string) {
  const other = join(home, 'other-home');
  process.env.JAIL_HOME = other;
  try {
    const { image } = await importImage(file, name);
    return { image, trees: image.layers.map((l) => treeOf(layerDir(l))) };
  } finally {
    process.env.JAIL_HOME = home;
  }
}

withSkopeo('import brings back byte-for-byte the same layers: from the layout, an oci-archive, docker-archive and a docker save by hand', async () => {
  const original = readImage('baj-test-c1');
  const trees = original.layers.map((l) => treeOf(layerDir(l)));
  const dir = exports.get('baj-test-c1') ?? (await exported('baj-test-c1'));
  const ociArchive = scratch('c1.oci.tar');
  if (!existsSync(ociArchive)) sh(`skopeo --insecure-policy copy -q oci:${dir} oci-archive:${ociArchive}`);
  const dockerArchive = scratch('c1.docker.tar');
  assert.is(sh(`skopeo --insecure-policy copy -q oci:${dir} docker-archive:${dockerArchive}:baj-test/c1:latest`).code, 0);

  // docker save before Docker 25: <id>/layer.tar (uncompressed), <hex>.json, manifest.json; tarred by GNU tar, with ./ names
  const stage = scratch('docker-save');
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const blob = (digest: string) => readFileSync(join(dir, 'blobs/sha256', digest.slice(7)));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString());
  const configHex = manifest.config.digest.slice(7);
  mkdirSync(stage);
  writeFileSync(join(stage, `${configHex}.json`), blob(manifest.config.digest));
  const layers = manifest.layers.map((l: { digest: string }, i: number) => {
    mkdirSync(join(stage, `layer${i}`));
    writeFileSync(join(stage, `layer${i}/layer.tar`), gunzipSync(blob(l.digest)));
    return `layer${i}/layer.tar`;
  });
  writeFileSync(join(stage, 'manifest.json'), JSON.stringify([{ Config: `${configHex}.json`, RepoTags: ['baj-test/c1:latest'], Layers: layers }]));
  const dockerSave = scratch('c1.docker-save.tar');
  assert.is(sh(`tar -C ${stage} -cf ${dockerSave} .`).code, 0);

  for (const [n, file] of [dir, ociArchive, dockerArchive, dockerSave].entries()) {
    const got = await importElsewhere(file, `baj-test-back${n}`);
    assert.equal(got.image.layers, original.layers, `${file}: the same layer names (the same content)`);
    assert.equal(got.trees, trees, `${file}: the same trees`);
    assert.equal(got.image.config, original.config);
  }
  // and into the first store: the layers are there already, so nothing is copied
  const { shared } = await importImage(dir, 'baj-test-back-here');
  assert.is(shared, 2);
});

withRunc('a bundle runs under runc: the hostname, the command as PID 1, whiteouts carried out, the locks in force', async () => {
  const dir = scratch('bundle');
  const script = 'hostname; ps -o pid,args; ls /bin/vi 2>&1; ls /usr/sbin; unshare -U true 2>/dev/null && echo userns-allowed || echo userns-refused';
  const { spec } = await exportBundle('baj-test-c1', dir, { command: ['sh', '-c', script] });
  assert.ok(spec.linux.namespaces.some((n: { type: string }) => n.type === 'user'));
  assert.is(spec.process.capabilities.bounding.length, 14);
  const out = runcRun(dir);
  assert.is(out.code, 0, out.stderr);
  const lines = out.stdout.split('\n');
  assert.is(lines[0], 'jail');
  assert.match(out.stdout, /^\s*1 sh -c hostname; ps/m, 'the command is PID 1');
  assert.match(out.stdout, /\/bin\/vi: No such file or directory/, 'the whiteout deleted it');
  assert.match(out.stdout, /^only-me$/m);
  for (const hidden of BASE_USR_SBIN()) assert.not.match(out.stdout, new RegExp(`^${hidden}$`, 'm'), `usr/sbin is opaque: ${hidden} is hidden`);
  assert.match(out.stdout, /^userns-refused$/m, 'seccomp refuses a new user namespace');
});

withRunc('a bundle with step 06\'s limits has them in config.json, and runc puts them in the jail\'s cgroup', async () => {
  const dir = scratch('bundle-limits');
  const script = 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max';
  const { spec } = await exportBundle('busybox', dir, { command: ['sh', '-c', script], limits: limitsFromFlags({ memory: '64M', pids: '32' }) });
  assert.is(spec.linux.resources.memory.limit, 64 * 2 ** 20);
  assert.is(spec.linux.resources.memory.swap, 64 * 2 ** 20, 'no swap beyond the limit');
  assert.is(spec.linux.resources.pids.limit, 32);
  const out = runcRun(dir);
  assert.is(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim().split('\n'), [String(64 * 2 ** 20), '32']);
});

let runs = 0;
/** runc run with a state dir of our own; always runc delete after. */
function runcRun(bundle: string) {
  const root = mkdtempSync('/tmp/baj-test-runc-');
  const id = `baj-test-${process.pid}-${++runs}`;
  try {
    return sh(`runc --root ${root} run --bundle ${bundle} ${id} </dev/null`);
  } finally {
    sh(`runc --root ${root} delete --force ${id}`);
    rmSync(root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Hostile archives

async function refusedImport(name: string, layers: Buffer[], pattern: RegExp): Promise<void> {
  const dir = scratch(`evil-${name}`);
  handMadeLayout(dir, layers);
  const images = imageNames();
  const layersBefore = readdirSync(join(home, 'images/layers'));
  await refused(() => importImage(dir, `baj-test-${name}`), pattern);
  assert.equal(imageNames(), images, 'no image was made');
  assert.equal(readdirSync(join(home, 'images/layers')), layersBefore, 'no layer was kept');
  assert.equal(readdirSync(tmpDir()), [], 'no half import is left');
}

test('import refuses an entry that climbs out with .., names it, and leaves nothing', async () => {
  await refusedImport('dotdot', [craftTar([{ name: 'etc', type: 'dir', mode: 0o755 }, { name: '../escape-dotdot', body: 'owned\n' }])], /entry '\.\.\/escape-dotdot' climbs out/);
  assert.not.ok(existsSync(join(tmpDir(), 'escape-dotdot')));
  assert.equal(everything(join(home, 'images')).filter((p) => p.includes('escape')), []);
});

test('import refuses an absolute entry, names it, and writes nothing there', async () => {
  const target = `/tmp/baj-test-abs-${process.pid}`;
  await refusedImport('absolute', [craftTar([{ name: `${target}/owned`, body: 'owned\n' }])], new RegExp(`entry '${target}/owned' is an absolute path`));
  assert.not.ok(existsSync(target));
});

test('import refuses a path through a symlink that leaves the layer (evil -> /tmp/DIR, then evil/owned), and writes nothing there', async () => {
  const outside = mkdtempSync('/tmp/baj-test-evil-');
  try {
    await refusedImport('symlink', [craftTar([{ name: 'evil', type: 'symlink', linkname: outside }, { name: 'evil/owned', body: 'owned\n' }])], /entry 'evil\/owned' goes through the symlink evil .*points outside the layer/);
    assert.equal(readdirSync(outside), []);
    await refusedImport('updir', [craftTar([{ name: 'a', type: 'dir', mode: 0o755 }, { name: 'a/up', type: 'symlink', linkname: '../..' }, { name: 'a/up/owned', body: 'x' }])], /goes through the symlink a\/up .*points outside the layer/);
    await refusedImport('hardlink', [craftTar([{ name: 'passwd', type: 'hardlink', linkname: '../../../../etc/passwd' }])], /entry '\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd' climbs out/);
    // a whiteout of '..' would delete the directory above the layer
    await refusedImport('whiteout-up', [craftTar([{ name: 'etc', type: 'dir', mode: 0o755 }, { name: 'etc/.wh...' }])], /entry 'etc\/\.wh\.\.\.' is a whiteout of no file/);
  } finally {
    rmSync(outside, { recursive: true, force: true });
  }
});

test('import follows a symlink that stays inside the layer, skips device nodes, and refuses a blob that is not what its digest says', async () => {
  const dir = scratch('benign');
  handMadeLayout(dir, [craftTar([
    { name: 'usr/lib', type: 'dir', mode: 0o755 },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'lib/libx.so', body: 'elf\n' },
    { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
    { name: 'gone', type: 'file', mode: 0o644 },
    { name: '.wh.gone', body: 'a whiteout has no content; these bytes are ignored\n' },
    { name: '.wh..wh.plnk', type: 'dir', mode: 0o700 },
  ])]);
  const { image, skipped } = await importImage(dir, 'baj-test-benign');
  const layer = layerDir(image.layers[0]!);
  assert.is(readFileSync(join(layer, 'usr/lib/libx.so'), 'utf8'), 'elf\n');
  assert.not.ok(existsSync(join(layer, 'dev/sda')));
  assert.match(skipped.join('\n'), /dev\/sda: a block device 8:0/);
  assert.ok(lstatSync(join(layer, 'gone')).isCharacterDevice(), '.wh.gone became a whiteout');
  assert.not.ok(existsSync(join(layer, '.wh..wh.plnk')), "AUFS's bookkeeping is not carried over");
  await removeImage('baj-test-benign');

  const tampered = scratch('tampered');
  handMadeLayout(tampered, [craftTar([{ name: 'hello', body: 'hello\n' }])]);
  const index = JSON.parse(readFileSync(join(tampered, 'index.json'), 'utf8'));
  const manifest = JSON.parse(readFileSync(join(tampered, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  const layerBlob = join(tampered, 'blobs/sha256', manifest.layers[0].digest.slice(7));
  writeFileSync(layerBlob, gzipSync(craftTar([{ name: 'hello', body: 'HELLO\n' }])));
  const images = imageNames();
  await refused(() => importImage(tampered, 'baj-test-tampered'), /layer 1's blob's sha256 is .* not the .* the archive says/);
  assert.equal(imageNames(), images);
  assert.equal(readdirSync(tmpDir()), []);
});

// ---------------------------------------------------------------------------
// npm run clean

test("npm run clean removes a dead process's half-made import and export, and leaves a living one's", async () => {
  const dead = deadPid();
  const half = join(tmpDir(), `import-${dead}-1`);
  mkdirSync(join(half, 'etc'), { recursive: true });
  const output = `${scratch('out')}.tmp-${dead}`;
  mkdirSync(join(output, 'blobs'), { recursive: true });
  writeFileSync(join(tmpDir(), `output-${dead}-2`), output + '\n');
  const mine = join(tmpDir(), `import-${process.pid}-99`);
  mkdirSync(mine);
  try {
    const said = await clean();
    assert.match(said.join('\n'), /removed the half-made/);
    assert.not.ok(existsSync(half));
    assert.not.ok(existsSync(output));
    assert.not.ok(existsSync(join(tmpDir(), `output-${dead}-2`)));
    assert.ok(existsSync(mine), 'a living process\'s work stays');
  } finally {
    rmSync(mine, { recursive: true, force: true });
  }
});

test.run();
