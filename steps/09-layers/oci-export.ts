// Step 09: an image as the rest of the world reads it, an OCI image layout
// (the image-spec): a directory of blobs named by their sha256, and three
// JSON files that point at them, each by digest.
//   oci-layout            {"imageLayoutVersion": "1.0.0"}: "this is a layout"
//   index.json            the entry point: the manifest's digest
//   blobs/sha256/<hex>    the manifest   -> the config's and each layer's digest
//                         the config     -> architecture, Cmd/Env/WorkingDir, rootfs.diff_ids
//                         each layer     -> a gzip'd tar in OCI's form (.wh. whiteouts)
// Two digests per layer: the blob's (compressed, what a registry stores and
// checks) and the diff_id (uncompressed, what names the layer's content —
// here, the name of its directory in the store). Everything is a chain of
// hashes from index.json down: change one byte and every name above changes.
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { buildDirAtomically } from './atomic-dir.ts';
import { layerTar } from './layers.ts';
import { checkImageName, ensureImage, layerDir, type Image } from './store.ts';

export const MEDIA_TYPES = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

/** Go's names for Node's process.arch, as OCI configs spell them. */
export function ociArchitecture(arch = process.arch): string {
  return ({ x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', riscv64: 'riscv64', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[arch] ?? arch;
}

/** The config blob: what the image runs, and the diff_ids that name its layers. */
export function imageConfig(image: Image, diffIds: string[]): object {
  return {
    created: image.created,
    architecture: ociArchitecture(),
    os: 'linux',
    config: { Cmd: image.config.cmd, Env: image.config.env, WorkingDir: image.config.workingDir },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: image.created, created_by: image.history?.[i] || `build-a-jail: layer ${i + 1} of ${image.name}` })),
  };
}

async function* hashing(chunks: AsyncIterable<Buffer>, hash: Hash): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    hash.update(chunk);
    yield chunk;
  }
}

/** A blob is stored under its own digest: blobs/sha256/<hex>. */
function writeBlob(layout: string, content: Buffer, mediaType: string): Descriptor {
  const hex = createHash('sha256').update(content).digest('hex');
  writeFileSync(join(layout, 'blobs/sha256', hex), content);
  return { mediaType, digest: `sha256:${hex}`, size: content.length };
}

const jsonBlob = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

/**
 * One layer dir as a gzip'd OCI tar, hashed twice on the way: the tar
 * (diff_id) before gzip, the blob after. The name is only known at the end,
 * so the blob is written under a temp name and renamed.
 */
async function writeLayerBlob(layout: string, dir: string, n: number): Promise<Descriptor & { diffId: string }> {
  const diff = createHash('sha256');
  const blob = createHash('sha256');
  const tmp = join(layout, 'blobs/sha256', `.layer-${n}`);
  await pipeline(Readable.from(hashing(layerTar(dir), diff)), createGzip(), (gz: AsyncIterable<Buffer>) => hashing(gz, blob), createWriteStream(tmp));
  const hex = blob.digest('hex');
  renameSync(tmp, join(layout, 'blobs/sha256', hex));
  const { size } = statSync(join(layout, 'blobs/sha256', hex));
  return { mediaType: MEDIA_TYPES.layerGzip, digest: `sha256:${hex}`, size, diffId: `sha256:${diff.digest('hex')}` };
}

/** Writes the image as an OCI layout into `layout`, an empty directory. */
export async function writeOciLayout(image: Image, layout: string): Promise<Descriptor> {
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const [i, id] of image.layers.entries()) {
    const { diffId, ...descriptor } = await writeLayerBlob(layout, layerDir(id), i);
    if (diffId !== id) warn(`layer ${id.slice(0, 19)}… changed since it was stored: its tar's sha256 is now ${diffId.slice(0, 19)}… (someone edited ${layerDir(id)})`);
    layers.push(descriptor);
    diffIds.push(diffId);
  }
  const config = writeBlob(layout, jsonBlob(imageConfig(image, diffIds)), MEDIA_TYPES.config);
  const manifest = writeBlob(layout, jsonBlob({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config, layers }), MEDIA_TYPES.manifest);
  const entry: Descriptor = {
    ...manifest,
    platform: { architecture: ociArchitecture(), os: 'linux' },
    annotations: { 'org.opencontainers.image.ref.name': 'latest' },
  };
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [entry] }));
  return manifest;
}

/** The image as an OCI layout in DIR (new or empty): whole, or not at all. */
export async function exportOci(name: string, dir: string): Promise<{ dir: string; manifest: Descriptor; image: Image }> {
  checkImageName(name);
  const image = await ensureImage(name);
  let manifest!: Descriptor;
  const target = await buildDirAtomically(dir, 'OCI layout', async (tmp) => {
    manifest = await writeOciLayout(image, tmp);
  });
  return { dir: target, manifest, image };
}

export async function exportOciCommand(name: string, dir: string): Promise<number> {
  checkImageName(name);
  heading(`Exporting image ${name} as an OCI image layout in ${dir}`);
  explain('Each layer becomes a gzip\'d tar in OCI\'s form: a whiteout (0/0 device) is written as .wh.NAME, an opaque dir gets .wh..wh..opq.');
  showCommand(`tar -C ${layerDir('sha256:…')} -c . | gzip > blobs/sha256/$(sha256sum …)   # one per layer, bottom first`);
  explain('Then the config (Cmd, Env, rootfs.diff_ids), the manifest (the digests of config and layers) and index.json (the manifest\'s).');
  const { dir: target, manifest, image } = await exportOci(name, dir);
  ok(`${target}: ${image.layers.length} layer${image.layers.length === 1 ? '' : 's'}, manifest ${manifest.digest.slice(0, 19)}…`);
  explain('Any OCI tool reads it now, e.g.:');
  showCommand(`skopeo inspect oci:${target}`);
  showCommand(`skopeo copy oci:${target} oci-archive:/tmp/${name}.tar   # one file; docker-archive:FILE:${name}:latest for docker load`);
  return 0;
}
