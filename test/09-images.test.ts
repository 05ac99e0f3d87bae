// Step 09's images, proven with the real tools: the store and its built-ins,
// commit of a kept jail's upper (a hand-made one: the runtime that mounts
// the overlay is another module's), rmi, export as an OCI layout that skopeo
// reads, a runc bundle that runc runs, import back (from a layout, an
// oci-archive, docker save archives) into byte-for-byte the same trees, and
// hostile archives refused with nothing left (09-images-hostile.test.ts). Everything lives in a
// JAIL_HOME of its own under /var/tmp, removed at the end. No registry, no
// network.
//   node --import tsx test/09-images.test.ts -c=false
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as assert from 'uvu/assert';
import { getXattr } from '../lib/libc.ts';
import { which } from '../lib/preflight.ts';
import { processStart } from '../lib/proc.ts';
import { limitsFromFlags } from '../steps/06-cgroups/flags.ts';
import { exportBundle } from '../steps/09-layers/bundle.ts';
import { commitJail } from '../steps/09-layers/commit.ts';
import { imagesCommand, listImages, removeImage } from '../steps/09-layers/images.ts';
import { exportOci } from '../steps/09-layers/oci-export.ts';
import { importImage } from '../steps/09-layers/oci-import.ts';
import { checkImageName, ensureImage, jailPaths, layerDir, layerDirs, readImage, readJailState, isRunning, tmpDir } from '../steps/09-layers/store.ts';
import { runNode, sh } from './helpers.ts';
import { BASE_USR_SBIN, deadPid, everything, imagesHome, imagesSuite, makeKeptJail, refused, scratch, storeState, treeOf } from './images.ts';

const home = imagesHome('baj-test-09-');
const test = imagesSuite('09 images: store, commit, export, import, bundle');

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

test.run();
