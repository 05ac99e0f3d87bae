// Step 09: the image store. An image is a list of layers and a few lines of
// config; a layer is a directory, named by the sha256 of its content, that
// overlayfs can use as a lowerdir as it is. Two images that share a layer
// share its directory: that is why a hundred containers of one image cost
// the disk one copy, and why an image is removed name first, layers last.
//   $JAIL_HOME/images/<name>.json               { name, layers: [diffId…], config, created, parent? }
//   $JAIL_HOME/images/layers/sha256-<hex>/      one layer, in overlayfs's form
//   $JAIL_HOME/images/tmp/<op>-<pid>-<n>        half-made work (npm run clean removes it)
//   $JAIL_HOME/overlay/<jail>/{upper,work}      one jail's private, disposable top (jail.json says whose)
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../../lib/libc.ts';
import { explain, heading, ok, showCommand } from '../../lib/output.ts';
import { processStart } from '../../lib/proc.ts';
import { run } from '../../lib/sh.ts';
import { ensureDir, isAlive, jailHome, rootfsDir } from '../../lib/state.ts';
import { buildBusyboxRootfs, buildDebianRootfs, sizeOf } from '../01-rootfs/rootfs.ts';
import { layerDiffId } from './layers.ts';

export interface ImageConfig {
  /** What runs when no command is given (OCI's Entrypoint and Cmd, joined). */
  cmd: string[];
  /** 'KEY=value' lines. */
  env: string[];
  workingDir: string;
}

export interface Image {
  name: string;
  /** diff_ids ('sha256:<hex>'), bottom first, as OCI's rootfs.diff_ids lists them. */
  layers: string[];
  config: ImageConfig;
  /** ISO 8601. */
  created: string;
  /** The image this one was committed on top of. */
  parent?: string;
  /** What made each layer, bottom first (OCI's history). */
  history?: string[];
  /** A built-in image: the rootfs it was made from, and that rootfs's stamp then. */
  builtin?: { rootfs: string; stamp: string };
}

export const storeDir = (): string => join(jailHome(), 'images');
export const layersDir = (): string => join(storeDir(), 'layers');
export const tmpDir = (): string => join(storeDir(), 'tmp');
const imageFile = (name: string): string => join(storeDir(), `${name}.json`);

/** sha256:<hex> -> its directory; the ':' becomes '-', which overlayfs's lowerdir list cannot misread. */
export const layerDir = (diffId: string): string => join(layersDir(), diffId.replace(':', '-'));

const NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** A name becomes a file name, so it may not hold '/' or '..'. Anything else is one sentence, exit 2. */
export function checkImageName(name: string, what = 'an image name'): string {
  if (!NAME.test(name) || name.includes('..')) {
    throw new JailError(`'${name}' is not ${what}: use 1-64 of a-z 0-9 _ . - starting with a letter or digit, e.g. busybox-web`, undefined, 2);
  }
  return name;
}

export function imageNames(): string[] {
  let entries: string[] = [];
  try {
    entries = readdirSync(storeDir());
  } catch {}
  return entries.filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).filter((n) => NAME.test(n)).sort();
}

export const imageExists = (name: string): boolean => existsSync(imageFile(name));

/** The image of that name, or one sentence saying there is none (exit 2). */
export function readImage(name: string): Image {
  checkImageName(name);
  let text: string;
  try {
    text = readFileSync(imageFile(name), 'utf8');
  } catch {
    throw new JailError(`no image named ${name}; see npm run step 9 -- images`, BUILTIN_NAMES.includes(name) ? undefined : 'import one (npm run step 9 -- import FILE NAME) or commit a kept jail', 2);
  }
  return JSON.parse(text) as Image;
}

/** Written to a temp file and renamed: a reader sees the old image or the new one, never half. */
export function writeImage(image: Image): void {
  ensureDir(storeDir());
  const tmp = `${imageFile(image.name)}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(image, null, 2) + '\n');
  renameSync(tmp, imageFile(image.name));
}

export function deleteImageFile(name: string): void {
  rmSync(imageFile(name), { force: true });
}

/** What overlayfs's lowerdir option wants: the TOP layer first (the reverse of OCI's order). */
export function layerDirs(image: Image): string[] {
  return image.layers.map(layerDir).reverse();
}

/** An image by name; a built-in one (busybox, debian) is made on first use. */
export async function ensureImage(name: string): Promise<Image> {
  checkImageName(name);
  if (BUILTIN_NAMES.includes(name)) return ensureBuiltinImage(name as Builtin);
  return readImage(name);
}

/**
 * One store operation at a time across processes (commit, import, rmi, a
 * built-in's first use): flock(2) on images/.lock, which the kernel drops
 * when a holder dies. Polls instead of blocking: a blocking flock would stop
 * Node's whole event loop, signal handlers and all.
 */
export async function withStoreLock<T>(body: () => Promise<T>): Promise<T> {
  ensureDir(storeDir());
  const fd = openSync(join(storeDir(), '.lock'), 'a');
  try {
    while (!flock(fd, LOCK_EX | LOCK_NB)) await new Promise((r) => setTimeout(r, 50));
    return await body();
  } finally {
    flock(fd, LOCK_UN);
    closeSync(fd);
  }
}

/** A fresh work dir in the store's tmp/, named so that npm run clean knows whose it is. */
let serial = 0;
export function storeTempPath(op: string): string {
  return join(ensureDir(tmpDir(), 0o700), `${op}-${process.pid}-${++serial}`);
}

/**
 * Puts a finished layer dir in its place, under its diff_id. If the store
 * has that layer already, it is the same content: the new copy goes.
 */
export function addLayer(tmp: string, diffId: string): 'added' | 'shared' {
  ensureDir(layersDir());
  const dest = layerDir(diffId);
  if (existsSync(dest)) {
    rmSync(tmp, { recursive: true, force: true });
    return 'shared';
  }
  renameSync(tmp, dest);
  return 'added';
}

/** Every layer an image lists or a jail (running or kept) stands on. */
export function referencedLayers(): Set<string> {
  const used = new Set<string>();
  for (const name of imageNames()) for (const l of readImage(name).layers) used.add(l);
  for (const jail of listJails()) {
    const layers = jail.layers ?? (imageExists(jail.image) ? readImage(jail.image).layers : []);
    for (const l of layers) used.add(l);
  }
  return used;
}

/** Layers that nothing uses any more go; call with the store locked. Returns their diff_ids. */
export function removeUnusedLayers(): string[] {
  const used = referencedLayers();
  let dirs: string[] = [];
  try {
    dirs = readdirSync(layersDir());
  } catch {}
  const gone = dirs.map((d) => d.replace('-', ':')).filter((id) => /^sha256:[0-9a-f]{64}$/.test(id) && !used.has(id));
  for (const id of gone) rmSync(layerDir(id), { recursive: true, force: true });
  return gone;
}

// ---------------------------------------------------------------------------
// Built-in images: step 01's root filesystems, one layer each

export const BUILTIN_NAMES: readonly string[] = ['busybox', 'debian'];
type Builtin = 'busybox' | 'debian';

/** PATH as the jails of steps 03-08 have it (lib/spec.ts jailEnv). */
const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'];

/**
 * Step 01 builds a rootfs into a temp dir and swaps it in (renameat2), so a
 * rebuilt rootfs is a new directory: a new inode. Its inode and mtime are
 * the stamp. (Hand edits deep inside the rootfs go unnoticed: rmi the
 * built-in image and it is made again.)
 */
function rootfsStamp(dir: string): string {
  const st = statSync(dir);
  return `${st.ino}:${Math.floor(st.mtimeMs)}`;
}

/**
 * debootstrap makes /dev/null and friends in the rootfs. A layer leaves
 * them out: a jail's /dev is a tmpfs made at its start (step 04), so they
 * are never seen, and import skips device nodes anyway (layers.ts).
 */
function removeDeviceNodes(dir: string): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isCharacterDevice() || st.isBlockDevice()) rmSync(path);
    else if (st.isDirectory()) removeDeviceNodes(path);
  }
}

/** The built-in image, made from step 01's rootfs once, again whenever step 01 rebuilds it. */
export async function ensureBuiltinImage(name: Builtin): Promise<Image> {
  const rootfs = rootfsDir(name);
  if (!existsSync(join(rootfs, 'bin/sh'))) {
    if (name === 'busybox') await buildBusyboxRootfs(rootfs);
    else await buildDebianRootfs(rootfs);
  }
  const fresh = (): Image | undefined => {
    if (!imageExists(name)) return undefined;
    const image = readImage(name);
    return image.builtin?.stamp === rootfsStamp(rootfs) && image.layers.every((l) => existsSync(layerDir(l))) ? image : undefined;
  };
  const found = fresh();
  if (found) return found;
  return withStoreLock(async () => {
    const again = fresh(); // made by another process while we waited for the lock
    if (again) return again;
    const stamp = rootfsStamp(rootfs);
    heading(`Making the built-in image ${name} from step 01's rootfs`);
    explain('A layer is a plain directory that overlayfs can stack; this one is a copy of the whole rootfs.');
    explain('Its name is the sha256 of its tar: the same tree always gets the same name, and is stored once.');
    const tmp = storeTempPath('builtin');
    try {
      showCommand(`cp -a --reflink=auto ${rootfs} ${tmp}`);
      await run(['cp', '-a', '--reflink=auto', rootfs, tmp]);
      removeDeviceNodes(tmp);
      showCommand(`tar -C ${tmp} -c . | sha256sum   # in spirit: layers.ts writes the tar deterministically`);
      const diffId = await layerDiffId(tmp);
      addLayer(tmp, diffId);
      const image: Image = {
        name,
        layers: [diffId],
        config: { cmd: ['/bin/sh'], env: DEFAULT_ENV, workingDir: '/' },
        created: new Date().toISOString(),
        history: [`build-a-jail: step 01's ${name} rootfs (cp -a ${rootfs})`],
        builtin: { rootfs, stamp },
      };
      writeImage(image);
      removeUnusedLayers(); // the layer of the rootfs before, if nothing stands on it
      ok(`image ${name}: one layer, ${diffId.slice(0, 19)}… (${sizeOf(layerDir(diffId))})`);
      return image;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

// ---------------------------------------------------------------------------
// Jails on an overlay: what the runtime (main.ts) keeps, and what commit and rmi read

export interface JailState {
  name: string;
  image: string;
  /** The image's layers when the jail started, bottom first: commit builds on these, even if the image changed since. */
  layers?: string[];
  /** The launcher owns the jail; a PID alone can be reused, so its start time goes with it. */
  launcherPid: number;
  /** Field 22 of /proc/PID/stat (lib/proc.ts processStart). */
  launcherStart: number;
  /** --keep: the upper stays after the jail exits, for commit. */
  kept: boolean;
}

export const overlayRoot = (): string => join(jailHome(), 'overlay');

/** $JAIL_HOME/overlay/<jail>: upper/ and work/ (on one filesystem, as overlayfs requires) and jail.json. */
export function jailDir(name: string): string {
  return join(overlayRoot(), checkImageName(name, 'a jail name'));
}

export const jailPaths = (name: string) => {
  const dir = jailDir(name);
  return { dir, upper: join(dir, 'upper'), work: join(dir, 'work'), state: join(dir, 'jail.json') };
};

/** jail.json, written whole or not at all. */
export function writeJailState(state: JailState): void {
  const { dir, state: file } = jailPaths(state.name);
  ensureDir(dir, 0o700);
  writeFileSync(`${file}.tmp-${process.pid}`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp-${process.pid}`, file);
}

export function readJailState(name: string): JailState {
  const { state } = jailPaths(name);
  let text: string;
  try {
    text = readFileSync(state, 'utf8');
  } catch {
    throw new JailError(`no jail named ${name} (there is no ${state})`, 'jails started with --keep stay until removed; ls ' + overlayRoot() + ' lists them', 2);
  }
  return JSON.parse(text) as JailState;
}

/** Alive, and the same process that started the jail (not a new one that got its PID). */
export function isRunning(state: JailState): boolean {
  return isAlive(state.launcherPid) && processStart(state.launcherPid) === state.launcherStart;
}

/** Every jail that has a jail.json, running or kept. */
export function listJails(): JailState[] {
  let names: string[] = [];
  try {
    names = readdirSync(overlayRoot());
  } catch {}
  const jails: JailState[] = [];
  for (const name of names.sort()) {
    try {
      jails.push(readJailState(name));
    } catch {} // a name that is no jail's, or a jail.json not written yet
  }
  return jails;
}
