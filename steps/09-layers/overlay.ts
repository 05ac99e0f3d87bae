// Step 09, on the host: a jail's root on layers. The launcher makes the
// jail's private, disposable top — $JAIL_HOME/overlay/<jail>/ with upper/,
// work/, merged/ (Docker's names) and jail.json — and registers its removal
// in the same breath; PID 1 mounts the overlay itself (lib/overlay.ts), in
// the jail's mount namespace, so that it vanishes with the jail.
//
// With a user namespace (the default) root in the jail is not the host's:
// step 08's overlay-userns.ts makes the layers and the jail's dir usable by
// it (idmapped in place, or chowned copies), before "go".
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { overlayTwin, type OverlayRoot } from '../../lib/overlay.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { processStart } from '../../lib/proc.ts';
import type { JailHook } from '../../lib/spec.ts';
import { ensureDir, listDir, removeStaleStaging } from '../../lib/state.ts';
import type { IdRanges } from '../03-namespaces/idrange.ts';
import { lowerCopies, overlayForUserns } from '../08-hardening/overlay-userns.ts';
import { idmapForbidden, shiftedDir } from '../08-hardening/userns.ts';
import { isRunning, jailPaths, layerDir, layerDirs, listJails, overlayRoot, readJailState, withStoreLock, type Image, type JailState } from './store.ts';

/** A jail's dirs: store.ts's jailPaths, plus merged/, the mount point of its root. */
export function overlayPaths(jail: string) {
  const p = jailPaths(jail);
  return { ...p, merged: join(p.dir, 'merged') };
}

/** What PID 1 mounts: the image's layers under this jail's upper. */
export function overlayRootOf(jail: string, image: Image, userns: boolean): OverlayRoot {
  const { upper, work } = overlayPaths(jail);
  return { lower: layerDirs(image), upper, work, userxattr: userns };
}

/** One sentence if the name is taken: by a running jail, a kept one, or a killed one's leftovers. */
export function checkJailNameFree(jail: string): void {
  const { dir } = overlayPaths(jail);
  if (!existsSync(dir)) return;
  let state: JailState | undefined;
  try {
    state = readJailState(jail);
  } catch {}
  if (state && isRunning(state)) throw new JailError(`a jail named ${jail} is running already (launcher PID ${state.launcherPid})`, 'give this one another --name', 2);
  if (state?.kept) throw new JailError(`there is a kept jail named ${jail} (from --keep)`, `commit it (npm run step 9 -- commit ${jail} IMAGE) or remove it (npm run step 9 -- rm ${jail}) first, or pick another --name`, 2);
  if (!state) throw new JailError(`${dir} is in the way: it has no jail.json, so no jail made it`, `look inside, remove it (rm -r ${dir}), or pick another --name`, 2);
  throw new JailError(`${dir} is left over from a jail named ${jail} that was killed`, 'npm run clean removes it; or pick another --name', 2);
}

// ---------------------------------------------------------------------------
// The jail's dir: claimed whole, removed whole

/** .new-<jail>-<pid>: a dir being made; renamed into place with jail.json in it, so a jail's dir never lacks one. */
const STAGE = /^\.new-.+-(\d+)$/;

/**
 * Makes upper/, work/ and merged/ and writes jail.json in a staging dir,
 * then renames it into place: rename(2) onto an existing jail's (non-empty)
 * dir fails, so two launchers cannot both take one name.
 */
function claimJailDir(state: JailState): void {
  const { dir } = overlayPaths(state.name);
  const stage = join(ensureDir(overlayRoot()), `.new-${state.name}-${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  // 0700: the upper holds whatever the jail writes, setuid files included; no host user may reach it
  mkdirSync(stage, { mode: 0o700 });
  for (const d of ['upper', 'work', 'merged']) mkdirSync(join(stage, d), { mode: 0o755 });
  writeFileSync(join(stage, 'jail.json'), JSON.stringify(state, null, 2) + '\n');
  try {
    renameSync(stage, dir);
  } catch (err) {
    rmSync(stage, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') checkJailNameFree(state.name);
    throw err;
  }
}

// ---------------------------------------------------------------------------
// The hook

export interface OverlayJail {
  /** The jail's name: its dir under $JAIL_HOME/overlay, what commit and rm take. */
  name: string;
  image: Image;
  /** --keep: the upper stays after the jail exits, for commit. */
  keep: boolean;
}

/**
 * The root hook of a jail on layers (step 08's launchHardened runs it
 * first). prepare: the jail's dir, its removal registered at once; attach
 * (with a user namespace): the layers and the jail's dir made usable by the
 * jail's root, in its mount namespace, before "go".
 */
export function overlayHook(jail: OverlayJail, ranges: IdRanges | undefined): JailHook {
  const p = overlayPaths(jail.name);
  const lower = layerDirs(jail.image);
  let copies: string[] | undefined;
  let ran = false; // report() runs only after a jail whose setup succeeded: a failed start keeps nothing
  return {
    name: 'overlay-root',
    async prepare(spec, cleanup) {
      heading(`The root: image ${jail.image.name}'s ${lower.length} layer${lower.length === 1 ? '' : 's'}, under a top of this jail's own`);
      // under the store's lock: an rmi (or a rebuilt built-in) removes only layers no jail.json names
      await withStoreLock(async () => {
        const missing = lower.find((l) => !existsSync(l));
        if (missing) throw new JailError(`image ${jail.image.name} lost its layer ${missing} while this jail started`, 'run the command again', 2);
        claimJailDir({ name: jail.name, image: jail.image.name, layers: jail.image.layers, launcherPid: process.pid, launcherStart: processStart(process.pid) ?? 0, kept: jail.keep });
        cleanup.defer(`the overlay dir of ${jail.name}`, () => {
          if (!(jail.keep && ran)) rmSync(p.dir, { recursive: true, force: true });
        });
      });
      showCommand(`mkdir -p ${p.upper} ${p.work} ${p.merged}`);
      lower.forEach((l, i) => explain(`lower ${i + 1}${i === 0 ? ' (top)' : ''}: ${l}   read-only, shared by every jail of the image`));
      explain(`upper: ${p.upper}   this jail's writes, copy-ups and whiteouts; ${jail.keep ? 'kept when it exits (--keep), for commit' : 'removed when it exits (--keep keeps it, for commit)'}`);
      showCommand(`${overlayTwin(p.merged, { lower, upper: p.upper, work: p.work, userxattr: !!ranges })}   # by PID 1, in the jail's mount namespace`);
      explain('the same mount is in no other namespace: the host never sees it, and it goes with the jail');
      // a forced fallback is known in advance: copy before the jail exists
      if (ranges && idmapForbidden()) copies = await lowerCopies(lower, ranges);
    },
    async attach(spec, initPid, cleanup) {
      if (!ranges) {
        explain("no user namespace (--privileged): PID 1 is the host's root and mounts the layers as they are, marks in trusted.overlay.*");
        return;
      }
      await overlayForUserns(initPid, { lower, ...p }, ranges, cleanup, { keep: jail.keep, copies });
    },
    async report() {
      ran = true;
    },
  };
}

// ---------------------------------------------------------------------------
// Kept jails and leftovers

/** rm JAIL: a kept (or killed) jail's dir. A running jail's is its own. */
export function removeJailDir(jail: string): string {
  const { dir } = overlayPaths(jail);
  const state = readJailState(jail);
  if (isRunning(state)) throw new JailError(`jail ${jail} is still running (launcher PID ${state.launcherPid})`, 'it removes its own dir when it exits (unless --keep)', 2);
  rmSync(dir, { recursive: true, force: true });
  return dir;
}

/**
 * npm run clean: the dirs of jails whose launcher is gone (SIGKILLed: its
 * cleanup never ran) and that were not kept, and staging dirs of dead PIDs.
 * Kept jails stay: they wait for commit, or for rm.
 */
export function cleanJailDirs(): string[] {
  const removed = removeStaleStaging(overlayRoot(), STAGE).map((p) => `removed the half-made ${p}`);
  for (const entry of listDir(overlayRoot())) {
    const path = join(overlayRoot(), entry);
    if (STAGE.test(entry)) continue; // a live launcher's, being made
    let state: JailState;
    try {
      state = readJailState(entry);
    } catch {
      continue; // no jail.json: nothing of ours
    }
    if (state.kept || isRunning(state)) continue;
    rmSync(path, { recursive: true, force: true });
    removed.push(`removed the overlay dir of jail ${entry} (its launcher, PID ${state.launcherPid}, is gone)`);
  }
  return [...removed, ...removeOrphanLayerCopies()];
}

/**
 * The fallback's chowned copies of layers (rootfs-shifted/sha256-HEX-…)
 * whose layer has left the store: no new jail can stand on them, and no
 * running one does (rmi refuses a layer a jail.json names).
 */
function removeOrphanLayerCopies(): string[] {
  const entries = listDir(shiftedDir());
  const used = new Set(listJails().flatMap((j) => j.layers ?? []));
  const removed: string[] = [];
  for (const entry of entries) {
    const m = /^sha256-([0-9a-f]{64})-/.exec(entry);
    if (!m || existsSync(layerDir(`sha256:${m[1]}`)) || used.has(`sha256:${m[1]}`) || /\.building-\d+$/.test(entry)) continue;
    rmSync(join(shiftedDir(), entry), { recursive: true, force: true });
    if (!entry.endsWith('.done')) removed.push(`removed the chowned copy of a layer no image has any more, ${join(shiftedDir(), entry)}`);
  }
  return removed;
}
