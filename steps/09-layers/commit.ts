// Step 09: commit. Everything a jail on an overlay changed is in its upper
// dir and nowhere else: new and modified files as they are, a deleted file
// as a whiteout (a 0/0 character device), a directory that was removed and
// made again as an opaque dir (xattr trusted.overlay.opaque=y). That upper,
// copied as it is, IS a layer: put it on top of the jail's image and the
// stack shows exactly what the jail saw when it exited. This is
// `docker commit`, and each RUN line of a Dockerfile.
import { existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { listXattrs, removeXattr } from '../../lib/libc.ts';
import { explain, heading, ok, showCommand } from '../../lib/output.ts';
import { run } from '../../lib/sh.ts';
import { sizeOf } from '../01-rootfs/rootfs.ts';
import { isOpaque, isOverlayXattr, layerDiffId, markOpaque } from './layers.ts';
import {
  addLayer, checkImageName, imageExists, isRunning, jailPaths, layerDir, readImage, readJailState, storeTempPath, withStoreLock, writeImage, type Image,
} from './store.ts';

/**
 * overlayfs writes more bookkeeping into an upper than whiteouts and opaque
 * marks: trusted.overlay.origin (which lower file a copy-up came from),
 * impure, nlink … (user.overlay.* under `userxattr`). Those point into THIS jail's stack and mean nothing in
 * another. Two would change what the layer says: redirect (a renamed
 * directory, with redirect_dir=on) and metacopy (a file whose data is still
 * below, with metacopy=on). OCI's tar cannot express either, so such an
 * upper is refused; mount with the defaults, redirect_dir=off and metacopy=off.
 */
function checkUpperForm(upper: string, jail: string): void {
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const odd = listXattrs(path).find((x) => isOverlayXattr(x) && (x.endsWith('.overlay.redirect') || x.endsWith('.overlay.metacopy')));
      if (odd) {
        throw new JailError(`jail ${jail}'s upper has ${odd} on ${path.slice(upper.length + 1)}: a layer cannot say that`, 'run the jail on an overlay mounted with redirect_dir=off,metacopy=off (the kernel\'s defaults)', 2);
      }
      if (lstatSync(path).isDirectory()) walk(path);
    }
  };
  walk(upper);
}

/**
 * Of overlayfs's xattrs only the opaque mark stays, in both spellings: a
 * jail with a user namespace wrote user.overlay.opaque (its overlay had
 * `userxattr`), one without trusted.overlay.opaque, and the layer must work
 * under either mount.
 */
function keepOnlyOpaqueMarks(dir: string): void {
  const walk = (path: string) => {
    const opaque = lstatSync(path).isDirectory() && isOpaque(path);
    for (const x of listXattrs(path)) if (isOverlayXattr(x)) removeXattr(path, x);
    if (opaque) markOpaque(path);
    if (lstatSync(path).isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(dir);
}

/**
 * The kept jail's upper, as a new layer on top of the layers the jail ran
 * on, saved as image `newName`. Refused, with nothing made: a bad name, a
 * name taken, an unknown jail, a jail still running (its upper is still
 * changing: a copy would be a torn snapshot).
 */
export async function commitJail(jail: string, newName: string): Promise<Image> {
  checkImageName(newName);
  const state = readJailState(jail);
  if (isRunning(state)) {
    throw new JailError(`jail ${jail} is still running (launcher PID ${state.launcherPid}): its upper is still changing`, 'commit it after it exits; start it with --keep so that its upper stays', 2);
  }
  const taken = () => {
    if (imageExists(newName)) throw new JailError(`there is an image named ${newName} already`, `pick another name, or remove it first: npm run step 9 -- rmi ${newName}`, 2);
  };
  taken();
  const base = readImage(state.image);
  const below = state.layers ?? base.layers;
  const { upper } = jailPaths(jail);
  if (!existsSync(upper)) throw new JailError(`jail ${jail} has no upper dir (${upper}): nothing to commit`, undefined, 2);
  checkUpperForm(upper, jail);

  const tmp = storeTempPath('commit');
  try {
    // cp -a keeps what a layer is made of: owners, modes, times, hard links,
    // the whiteouts (device nodes) and, as root, trusted.* xattrs (the opaque marks)
    showCommand(`cp -a --reflink=auto ${upper} ${tmp}`);
    await run(['cp', '-a', '--reflink=auto', upper, tmp]);
    keepOnlyOpaqueMarks(tmp);
    const diffId = await layerDiffId(tmp);
    return await withStoreLock(async () => {
      taken(); // another commit or import may have taken it meanwhile
      addLayer(tmp, diffId);
      const image: Image = {
        name: newName,
        layers: [...below, diffId],
        config: base.config,
        created: new Date().toISOString(),
        parent: state.image,
        history: [...below.map((l, i) => (base.layers[i] === l ? (base.history?.[i] ?? '') : '')), `build-a-jail: commit of jail ${jail}`],
      };
      writeImage(image);
      return image;
    });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export async function commitCommand(jail: string, name: string): Promise<number> {
  checkImageName(name);
  heading(`Committing jail ${jail} as image ${name}`);
  explain('The jail wrote only into its upper dir: new files, whiteouts for deletions, opaque dirs for replaced ones.');
  explain('Copied as it is, that upper is a layer; on top of the jail\'s image it makes a new image.');
  const image = await commitJail(jail, name);
  const top = image.layers.at(-1)!;
  ok(`image ${name}: ${image.layers.length} layers, the new one ${top.slice(0, 19)}… (${sizeOf(layerDir(top))}), on ${image.parent}`);
  explain(`Run it: npm run step 9 -- --image ${name}; or look at the layer: ls -la ${layerDir(top)}`);
  return 0;
}
