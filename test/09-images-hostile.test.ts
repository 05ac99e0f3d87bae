// Step 09's import against hostile archives, crafted by hand: an entry that
// climbs out with .., an absolute one, a path through a symlink that leaves
// the layer; each refused, named, and nothing written anywhere; a symlink
// that stays inside followed, device nodes skipped, a blob that is not what
// its digest says refused. And npm run clean after a killed import or
// export. A JAIL_HOME of its own under /var/tmp. No registry, no network.
//   node --import tsx test/09-images-hostile.test.ts -c=false
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as assert from 'uvu/assert';
import { clean } from '../steps/09-layers/clean.ts';
import { removeImage } from '../steps/09-layers/images.ts';
import { importImage } from '../steps/09-layers/oci-import.ts';
import { ensureImage, imageNames, layerDir, tmpDir } from '../steps/09-layers/store.ts';
import { isRoot } from './helpers.ts';
import { craftTar, deadPid, everything, handMadeLayout, imagesHome, imagesSuite, refused, scratch } from './images.ts';

const home = imagesHome('baj-test-09h-');
const test = imagesSuite('09 images: hostile archives, and clean');
// a store with its built-in image, as a learner's has: an import adds to it, and a refused one must not
test.before(async () => {
  if (isRoot) await ensureImage('busybox');
});

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
