// Step 09: import. An image from elsewhere, an OCI layout (a directory, or
// a tar of one: skopeo's oci-archive) or a `docker save` archive, becomes
// layer dirs in overlay form and an image. Everything in the archive is
// somebody else's: every blob is checked against its digest (the chain from
// index.json down), every entry of every layer against the layer's root
// (layers.ts resolveInLayer), and the whole import is built in the store's
// tmp/ and moved into place only at the end: a refusal leaves nothing.
//   docker save (< 25)  manifest.json: [{Config: "<hex>.json", Layers: ["<id>/layer.tar", …]}]
//   docker save (≥ 25)  the same, and an OCI layout beside it (index.json, blobs/): read as OCI
import { createHash, type Hash } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, readSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { CleanupStack, withSignals } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { extractLayer, layerDiffId } from './layers.ts';
import { MEDIA_TYPES, ociArchitecture } from './oci-export.ts';
import { addLayer, checkImageName, imageExists, storeTempPath, withStoreLock, writeImage, type Image } from './store.ts';
import { indexTarFile, type TarMember } from './tar.ts';

/** An image's files by name, from a directory or straight out of a tar file. */
interface Archive {
  has(name: string): boolean;
  open(name: string): AsyncIterable<Buffer>;
  read(name: string): Buffer;
}

/** Names come from the archive's own JSON: they must stay inside it. */
function memberName(name: string): string {
  const clean = posix.normalize(name.replace(/^(\.\/)+/, ''));
  if (clean.startsWith('/') || clean === '..' || clean.startsWith('../')) {
    throw new JailError(`refused: the archive's manifest names '${name}', which is outside the archive; nothing was imported`, undefined, 2);
  }
  return clean;
}

function directoryArchive(root: string): Archive {
  const real = realpathSync(root);
  const path = (name: string): string | undefined => {
    try {
      const p = realpathSync(join(real, memberName(name)));
      return p.startsWith(real + '/') && statSync(p).isFile() ? p : undefined; // a symlink out of the layout is no member of it
    } catch {
      return undefined;
    }
  };
  const need = (name: string) => path(name) ?? missing(name);
  return { has: (n) => path(n) !== undefined, open: (n) => createReadStream(need(n)), read: (n) => readFileSync(need(n)) };
}

function tarArchive(file: string): Archive {
  const members = indexTarFile(file);
  const find = (name: string): TarMember | undefined => {
    let key = memberName(name);
    for (let hops = 0; hops < 8; hops++) {
      const m = members.get(key);
      if (m?.header.type !== 'symlink') return m?.header.type === 'file' ? m : undefined;
      key = memberName(posix.join(posix.dirname(key), m.header.linkname)); // docker save links <id>/layer.tar -> ../<hex>.tar
    }
    return undefined;
  };
  const need = (name: string) => find(name) ?? missing(name);
  const open = (name: string): AsyncIterable<Buffer> => {
    const m = need(name);
    return m.header.size ? createReadStream(file, { start: m.offset, end: m.offset + m.header.size - 1 }) : Readable.from([]);
  };
  const read = (name: string): Buffer => {
    const m = need(name);
    const buf = Buffer.alloc(m.header.size);
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buf, 0, buf.length, m.offset);
    } finally {
      closeSync(fd);
    }
    return buf;
  };
  return { has: (n) => find(n) !== undefined, open, read };
}

function missing(name: string): never {
  throw new JailError(`the archive has no file ${name}, which its manifest names`, 'it is incomplete: export or save it again', 2);
}

function openArchive(file: string): Archive {
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new JailError(`${file} does not exist`, 'give an OCI layout (a directory), an oci-archive or a docker save tar', 2);
  }
  if (st.isDirectory()) return directoryArchive(file);
  const head = Buffer.alloc(2);
  const fd = openSync(file, 'r');
  readSync(fd, head, 0, 2, 0);
  closeSync(fd);
  if (head[0] === 0x1f && head[1] === 0x8b) throw new JailError(`${file} is gzip'd; the archive itself must be a plain tar (its layers may be gzip'd)`, `gunzip it first: gunzip -k ${file}`, 2);
  return tarArchive(file);
}

// ---------------------------------------------------------------------------
// What the archive says: a config and its layers, each with the digests to check

interface LayerRef {
  name: string;
  /** The blob's own digest (OCI); docker save names only the diff_ids. */
  digest?: string;
  mediaType?: string;
}

interface Found {
  format: string;
  config: Buffer;
  layers: LayerRef[];
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function blobName(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new JailError(`the archive names a blob by '${digest}', and only sha256 digests are known here`, undefined, 2);
  return `blobs/sha256/${digest.slice(7)}`;
}

/** A small blob (a manifest, a config), refused unless its bytes are what its digest says. */
function verifiedBlob(a: Archive, digest: string, what: string): Buffer {
  const data = a.read(blobName(digest));
  if (sha256(data) !== digest) throw mismatch(what, digest, sha256(data));
  return data;
}

const mismatch = (what: string, want: string, got: string): JailError =>
  new JailError(`refused: the ${what}'s sha256 is ${got.slice(0, 19)}…, not the ${want.slice(0, 19)}… the archive says; nothing was imported`, 'the archive is corrupt or was changed after it was made', 2);

const MANIFESTS = [MEDIA_TYPES.manifest, 'application/vnd.docker.distribution.manifest.v2+json'];
const INDEXES = [MEDIA_TYPES.index, 'application/vnd.docker.distribution.manifest.list.v2+json'];

/** index.json -> (an index per platform ->) the manifest -> config and layers. */
function findOci(a: Archive): Found {
  let index = JSON.parse(a.read('index.json').toString('utf8'));
  for (let depth = 0; depth < 4; depth++) {
    const entries: any[] = index.manifests ?? [];
    const mine = entries.filter((m) => !m.platform || (m.platform.os === 'linux' && m.platform.architecture === ociArchitecture()));
    const pick = mine.length === 1 ? mine[0] : entries.length === 1 ? entries[0] : undefined;
    if (!pick) throw new JailError(`the layout holds ${entries.length} images and none is plainly the one for linux/${ociArchitecture()}`, 'copy out one: skopeo copy oci:DIR:TAG oci:NEWDIR', 2);
    const blob = verifiedBlob(a, pick.digest, 'manifest');
    const doc = JSON.parse(blob.toString('utf8'));
    const type = pick.mediaType ?? doc.mediaType;
    if (INDEXES.includes(type)) {
      index = doc;
      continue;
    }
    if (!MANIFESTS.includes(type)) throw new JailError(`the layout's entry is a ${type}, not an image manifest`, undefined, 2);
    return {
      format: 'an OCI image layout',
      config: verifiedBlob(a, doc.config.digest, 'config'),
      layers: (doc.layers as any[]).map((l) => ({ name: blobName(l.digest), digest: l.digest, mediaType: l.mediaType })),
    };
  }
  throw new JailError('the layout nests indexes deeper than any image needs', undefined, 2);
}

/** manifest.json of `docker save`: names, not digests; the config's name is its digest. */
function findDockerSave(a: Archive): Found {
  const manifests = JSON.parse(a.read('manifest.json').toString('utf8'));
  if (!Array.isArray(manifests) || manifests.length !== 1) throw new JailError(`the archive holds ${manifests.length ?? 'no'} images; save one at a time (docker save IMAGE)`, undefined, 2);
  const m = manifests[0];
  const config = a.read(m.Config);
  const hex = /([0-9a-f]{64})(\.json)?$/.exec(m.Config)?.[1];
  if (hex && sha256(config) !== `sha256:${hex}`) throw mismatch('config', `sha256:${hex}`, sha256(config));
  return { format: 'a docker save archive', config, layers: (m.Layers as string[]).map((name) => ({ name })) };
}

// ---------------------------------------------------------------------------
// The layers

async function* hashing(chunks: AsyncIterable<Buffer>, hash: Hash): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    hash.update(chunk);
    yield chunk;
  }
}

/** A layer blob as a plain tar: gzip is recognised by its first two bytes (1f 8b), whatever the name says. */
async function* uncompressed(chunks: AsyncIterable<Buffer>, layer: string): AsyncGenerator<Buffer> {
  const it = chunks[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const head: Buffer = first.value;
  const all = (async function* () {
    yield head;
    for (let n = await it.next(); !n.done; n = await it.next()) yield n.value as Buffer;
  })();
  if (head.readUInt32BE(0) === 0x28b52ffd) throw new JailError(`layer ${layer} is zstd-compressed, which Node 20 cannot read`, 'copy it with gzip: skopeo copy --dest-compress-format gzip …', 2);
  if (head[0] !== 0x1f || head[1] !== 0x8b) return yield* all;
  const gunzip = createGunzip();
  const src = Readable.from(all);
  src.on('error', (err) => gunzip.destroy(err));
  src.pipe(gunzip);
  try {
    yield* gunzip as AsyncIterable<Buffer>;
  } catch (err) {
    if (err instanceof JailError) throw err;
    throw new JailError(`layer ${layer} is not a valid gzip stream (${(err as Error).message})`, 'the archive is corrupt', 2);
  } finally {
    src.destroy(); // a refused entry stops the reading early: close the archive's file too
  }
}

/** The image config's Entrypoint and Cmd, joined: what our Image runs. */
function configOf(cfg: any): Image['config'] {
  const c = cfg.config ?? {};
  const cmd = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  return { cmd: cmd.length ? cmd : ['/bin/sh'], env: c.Env ?? [], workingDir: c.WorkingDir || '/' };
}

/**
 * Imports FILE as image NAME. Each layer is extracted into its own temp dir
 * in overlay form, its digests checked, then named by the sha256 of the
 * tar we would write for it (layers.ts layerTar): a layer exported from
 * this store comes back under its old name and shares its directory.
 */
export async function importImage(file: string, name: string): Promise<{ image: Image; format: string; shared: number; skipped: string[] }> {
  checkImageName(name);
  const taken = () => {
    if (imageExists(name)) throw new JailError(`there is an image named ${name} already`, `pick another name, or remove it first: npm run step 9 -- rmi ${name}`, 2);
  };
  taken();
  const a = openArchive(file);
  const found = a.has('index.json') ? findOci(a) : a.has('manifest.json') ? findDockerSave(a) : undefined;
  if (!found) throw new JailError(`${file} is neither an OCI layout (no index.json) nor a docker save archive (no manifest.json)`, undefined, 2);
  const cfg = JSON.parse(found.config.toString('utf8'));
  if (cfg.os && cfg.os !== 'linux') throw new JailError(`the image is for ${cfg.os}, and a jail runs Linux programs`, undefined, 2);
  if (cfg.architecture && cfg.architecture !== ociArchitecture()) warn(`the image is for ${cfg.architecture}; this machine is ${ociArchitecture()}, so its programs will not run here`);
  const diffIds: string[] = cfg.rootfs?.diff_ids ?? [];
  if (diffIds.length !== found.layers.length) throw new JailError(`the config lists ${diffIds.length} layers and the manifest ${found.layers.length}`, 'the archive is corrupt', 2);

  await using cleanup = new CleanupStack();
  const interrupted = () => void cleanup.unwind().then(() => process.exit(130));
  return await withSignals(interrupted, async () => {
    const skipped: string[] = [];
    const extracted: { tmp: string; key: string }[] = [];
    for (const [i, layer] of found.layers.entries()) {
      if (layer.mediaType && !/tar(\+gzip)?$|rootfs\.diff\.tar(\.gzip)?$/.test(layer.mediaType)) {
        throw new JailError(`layer ${i + 1} is a ${layer.mediaType}, not a tar (or a gzip'd one)`, undefined, 2);
      }
      const tmp = storeTempPath('import');
      cleanup.defer(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
      mkdirSync(tmp, { mode: 0o755 });
      showCommand(`tar -C ${tmp} -xzf ${layer.name}   # in spirit: every entry checked, .wh. files become whiteouts`);
      const blobHash = createHash('sha256');
      const onSkip = (entry: string, why: string) => skipped.push(`${entry}: ${why}`);
      const { diffId } = await extractLayer(uncompressed(hashing(a.open(layer.name), blobHash), layer.name), tmp, { form: 'overlay', onSkip });
      const blobDigest = `sha256:${blobHash.digest('hex')}`;
      if (layer.digest && blobDigest !== layer.digest) throw mismatch(`layer ${i + 1}'s blob`, layer.digest, blobDigest);
      if (diffId !== diffIds[i]) throw mismatch(`layer ${i + 1}'s tar`, diffIds[i]!, diffId);
      const key = await layerDiffId(tmp);
      if (key !== diffId) explain(`layer ${i + 1}: re-tarred the way this store writes tars, its sha256 is ${key.slice(0, 19)}…: its name here`);
      extracted.push({ tmp, key });
    }
    const history = ((cfg.history ?? []) as any[]).filter((h) => !h.empty_layer).map((h) => String(h.created_by ?? ''));
    const image: Image = {
      name,
      layers: extracted.map((e) => e.key),
      config: configOf(cfg),
      created: cfg.created ?? new Date().toISOString(),
      history: history.length === extracted.length ? history : undefined,
    };
    let shared = 0;
    await withStoreLock(async () => {
      taken();
      for (const e of extracted) if (addLayer(e.tmp, e.key) === 'shared') shared++;
      writeImage(image);
    });
    return { image, format: found.format, shared, skipped };
  });
}

export async function importCommand(file: string, name: string): Promise<number> {
  checkImageName(name);
  heading(`Importing ${file} as image ${name}`);
  explain('Each layer blob is checked against its sha256, then unpacked into a directory of its own, in overlay form:');
  explain('a .wh.NAME file becomes a 0/0 character device, a .wh..wh..opq marks its dir opaque (xattr trusted.overlay.opaque=y).');
  explain('An entry with .., an absolute name, or a path through a symlink that leaves the layer is refused, and nothing is kept.');
  const { image, format, shared, skipped } = await importImage(file, name);
  if (skipped.length) warn(`skipped ${skipped.length} entr${skipped.length === 1 ? 'y' : 'ies'}: ${skipped.slice(0, 3).join('; ')}${skipped.length > 3 ? '; …' : ''}`);
  ok(`image ${name} from ${format}: ${image.layers.length} layer${image.layers.length === 1 ? '' : 's'}${shared ? `, ${shared} of them already in the store (shared, not copied)` : ''}; runs ${JSON.stringify(image.config.cmd)}`);
  explain(`Run it: npm run step 9 -- --image ${name}`);
  return 0;
}
