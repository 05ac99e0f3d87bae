// Step 09: `images` and `rmi`. Listing shows what layering saves: each
// layer is stored once, however many images and jails stand on it. Removing
// is the same idea backwards: the name goes first, and a layer only when no
// image lists it and no jail (running, or kept for a commit) stands on it —
// as `docker rmi` refuses an image a container or a child image still needs.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { JailError } from '../../lib/errors.ts';
import { colour, explain, heading, ok, showCommand } from '../../lib/output.ts';
import { formatBytes } from '../06-cgroups/flags.ts';
import {
  BUILTIN_NAMES, checkImageName, deleteImageFile, imageExists, imageNames, isRunning, layerDir, listJails, readImage, removeUnusedLayers, storeDir, withStoreLock, type Image,
} from './store.ts';

export interface ImageInfo {
  name: string;
  /** Bottom first, with the disk space each layer's directory takes. */
  layers: { diffId: string; bytes: number }[];
  bytes: number;
  created?: string;
  parent?: string;
  /** A built-in image not made yet: step 01's rootfs becomes its layer on first use. */
  notMade?: boolean;
}

/** du -s -B1 of each layer dir: what it takes on disk (hard links inside counted once). */
function diskUsage(dirs: string[]): Map<string, number> {
  const sizes = new Map<string, number>();
  const present = dirs.filter((d) => existsSync(d));
  if (!present.length) return sizes;
  const out = execFileSync('du', ['-s', '-B1', '--', ...present], { encoding: 'utf8' });
  for (const line of out.split('\n').filter(Boolean)) {
    const tab = line.indexOf('\t');
    sizes.set(line.slice(tab + 1), Number(line.slice(0, tab)));
  }
  return sizes;
}

export function listImages(): ImageInfo[] {
  const images = imageNames().map(readImage);
  const sizes = diskUsage([...new Set(images.flatMap((i) => i.layers))].map(layerDir));
  const infos: ImageInfo[] = images.map((i) => {
    const layers = i.layers.map((diffId) => ({ diffId, bytes: sizes.get(layerDir(diffId)) ?? 0 }));
    return { name: i.name, layers, bytes: layers.reduce((n, l) => n + l.bytes, 0), created: i.created, parent: i.parent };
  });
  for (const name of BUILTIN_NAMES) if (!imageExists(name)) infos.push({ name, layers: [], bytes: 0, notMade: true });
  return infos.sort((a, b) => a.name.localeCompare(b.name));
}

/** The reason an image cannot go yet, or undefined. */
function stillNeeded(image: Image): string | undefined {
  const jail = listJails().find((j) => j.image === image.name);
  if (jail) {
    return `jail ${jail.name} (${isRunning(jail) ? 'running' : 'kept'}) stands on it; ${isRunning(jail) ? 'stop it' : 'commit or remove it'} first`;
  }
  for (const other of imageNames().filter((n) => n !== image.name).map(readImage)) {
    if (other.parent === image.name) return `image ${other.name} was committed on top of it; rmi ${other.name} first`;
    const builtOn = other.layers.length > image.layers.length && image.layers.every((l, i) => other.layers[i] === l);
    if (builtOn) return `image ${other.name} is built on its layers; rmi ${other.name} first`;
  }
  return undefined;
}

/** Removes the name, then every layer nothing uses any more. Returns the layers removed. */
export async function removeImage(name: string): Promise<string[]> {
  checkImageName(name);
  return withStoreLock(async () => {
    const image = readImage(name);
    const why = stillNeeded(image);
    if (why) throw new JailError(`image ${name} is still needed: ${why}`, undefined, 2);
    deleteImageFile(name);
    return removeUnusedLayers();
  });
}

// ---------------------------------------------------------------------------
// The verbs, as main.ts runs them

const short = (diffId: string): string => diffId.slice(7, 19);

/** npm run step 9 -- images: the list on stdout (it is the result), the lesson on stderr. */
export async function imagesCommand(): Promise<number> {
  heading(`The images in ${storeDir()}`);
  explain('Each layer is a directory named after its sha256; images that share a layer share its directory.');
  showCommand(`ls ${storeDir()} ${storeDir()}/layers; du -sh ${storeDir()}/layers/*`);
  const rows = listImages().map((i) => [
    i.name,
    i.notMade ? '-' : String(i.layers.length),
    i.notMade ? '-' : formatBytes(i.bytes),
    i.notMade ? 'built-in: made from step 01\'s rootfs on first use' : i.layers.map((l) => short(l.diffId)).join(' '),
    i.parent ?? '',
  ]);
  const table = [['NAME', 'LAYERS', 'SIZE', 'LAYER IDS (bottom first)', 'PARENT'], ...rows];
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  for (const r of table) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
  return 0;
}

export async function rmiCommand(name: string): Promise<number> {
  checkImageName(name);
  heading(`Removing image ${name}`);
  explain('The name goes first; a layer only once no image lists it and no jail stands on it.');
  const gone = await removeImage(name); // refuses (and says why) before anything is removed
  showCommand(`rm ${storeDir()}/${name}.json`);
  for (const id of gone) showCommand(`rm -r ${layerDir(id)}`);
  ok(gone.length ? `removed ${name} and ${gone.length} layer${gone.length === 1 ? '' : 's'} no other image uses` : `removed ${name}; its layers stay: ${colour.dim('other images use them')}`);
  return 0;
}
