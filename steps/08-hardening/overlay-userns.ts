// Step 08's user namespace, for a jail whose root is an overlay (step 07's
// demo locked by `step 8 --ssh`, every jail of step 09). Root in the jail is
// not the host's, and the files are the host's root's. Two things the kernel
// will not do:
//   - idmap the overlay mount itself: mount_setattr on an overlay is EINVAL;
//   - let host root mount an overlay over an idmapped upper: host uid 0 has
//     no place in the jail's uid_map (creating work/ fails: EOVERFLOW).
// What works: host root idmaps, in place and in the jail's mount namespace,
// each lower dir (read-only) and the jail's dir (the parent of upper/ and
// work/); then the jail's own root mounts the overlay on them, with
// userxattr (lib/overlay.ts). Where idmapped mounts are missing: a chowned
// copy of each lower dir (userns.ts's fallback), and the jail's own dir
// chowned into its range.
import { lchownSync, lstatSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { explain, heading, showCommand, warn } from '../../lib/output.ts';
import { requireTools } from '../../lib/preflight.ts';
import type { IdRange, IdRanges } from '../03-namespaces/idrange.ts';
import { bindInJail, idmapForbidden, idmapInPlace, shiftedCopy } from './userns.ts';

export interface OverlayDirs {
  /** The read-only lower dirs, TOP first. */
  lower: string[];
  /** The jail's own dir: upper/, work/ and merged/ are in it. */
  dir: string;
  upper: string;
  work: string;
  merged: string;
}

/** Every file's owner moved by `by` within the range (the fallback's chown, and its undo). */
function shiftTree(path: string, uid: IdRange, gid: IdRange, by: 1 | -1): void {
  const move = (id: number, r: IdRange) => (by === 1 ? (id < r.count ? r.base + id : id) : id >= r.base && id < r.base + r.count ? id - r.base : id);
  const s = lstatSync(path);
  lchownSync(path, move(s.uid, uid), move(s.gid, gid));
  if (s.isDirectory()) for (const name of readdirSync(path)) shiftTree(join(path, name), uid, gid, by);
}

/** Idmapped lower dirs under an overlay came in Linux 5.19 (idmapped mounts themselves in 5.12). */
function kernelTooOld(): boolean {
  const [major = 0, minor = 0] = release().split('.').map(Number);
  return major < 5 || (major === 5 && minor < 19);
}

/** The fallback's chowned copies of the lower dirs (cached by userns.ts; made once per call). */
export const lowerCopies = (lower: string[], ranges: IdRanges): Promise<string[]> => Promise.all(lower.map((l) => shiftedCopy(l, ranges)));

/**
 * Before "go", in the jail's mount namespace: the lower dirs and the jail's
 * dir made usable by the jail's root. `keep`: the upper outlives the jail
 * (step 09's --keep), so a chowned upper is chowned back when it ends, for
 * a commit that wants uid 0 to be 0. `copies` may have been made already
 * (before the jail existed, when the fallback was known in advance).
 */
export async function overlayForUserns(initPid: number, o: OverlayDirs, ranges: IdRanges, cleanup: CleanupStack, opts: { keep?: boolean; copies?: string[] } = {}): Promise<void> {
  requireTools('nsenter');
  heading('The layers, for a root that is not root');
  explain("the overlay mount itself cannot be idmapped (EINVAL), and host root cannot mount one over an idmapped upper (its uid 0 is not in the jail's map):");
  explain("so host root idmaps the layers (read-only) and the jail's dir in place, or falls back to chowned copies; the jail's own root mounts the overlay on them, with userxattr");
  const tooOld = kernelTooOld();
  if (!idmapForbidden() && tooOld) warn(`Linux ${release()} cannot stack an overlay on idmapped layers (5.19+): using chowned copies of the layers instead`);
  if (!idmapForbidden() && !tooOld) {
    const why = await idmapInPlace(initPid, [...o.lower.map((path) => ({ path, readOnly: true })), { path: o.dir }]);
    if (!why) {
      explain(`idmapped: uid 0 on disk is uid 0 in the jail (host uid ${ranges.uid.base}); the layers on disk are untouched, and the upper's files are owned by 0 on disk too`);
      return;
    }
    warn(`no idmapped mounts here (${why}): using chowned copies of the layers instead`);
  } else if (idmapForbidden()) {
    explain('idmapped mounts: not used (JAIL_NO_IDMAP=1, as on a kernel older than 5.12 or a filesystem without them)');
  }
  const shifted = opts.copies ?? (await lowerCopies(o.lower, ranges));
  for (const [i, copy] of shifted.entries()) await bindInJail(initPid, copy, o.lower[i]!, true);
  // the jail's own dirs (and what the launcher wrote in its upper): into its range on disk
  const mine = [o.upper, o.work, o.merged];
  showCommand(`chown ${ranges.uid.base}:${ranges.gid.base} ${o.dir}; chown -R +${ranges.uid.base} ${mine.join(' ')}`);
  lchownSync(o.dir, ranges.uid.base, ranges.gid.base);
  for (const d of mine) shiftTree(d, ranges.uid, ranges.gid, 1);
  if (opts.keep) {
    cleanup.defer(`the owners of ${o.upper}, back from the jail's range`, () => {
      lchownSync(o.dir, 0, 0);
      for (const d of mine) shiftTree(d, ranges.uid, ranges.gid, -1);
    });
  }
  explain(`chowned copies of the layers: ${shifted.join(' ')}`);
}
