// npm run clean, step 09's part. First the jails' dirs (overlay.ts): those
// of jails whose launcher was killed and that were not kept. Then what a
// killed commit, import or export left: work in progress lives in the
// store's tmp/ as <op>-<pid>-<n> (a layer being copied or extracted), and
// an export's half-made DIR.tmp-PID sits beside its target, with a note in
// tmp/ (output-<pid>-<n>) saying where. Each belongs to a PID; only a dead
// PID's leftovers go. Last the layers that no image lists and no jail
// stands on (a commit or import killed between moving its layers in and
// writing its image), if no store operation is under way right now.
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../../lib/libc.ts';
import { isAlive, listDir, removeStaleStaging } from '../../lib/state.ts';
import { OUTPUT_NOTE } from './atomic-dir.ts';
import { cleanJailDirs } from './overlay.ts';
import { removeUnusedLayers, storeDir, tmpDir } from './store.ts';

/** `<op>-<pid>-<n>` -> pid */
const ownerOf = (entry: string): number | undefined => {
  const m = /^[a-z]+-(\d+)-\d+$/.exec(entry);
  return m ? Number(m[1]) : undefined;
};

function removeHalfMade(): string[] {
  const entries = listDir(tmpDir());
  const removed: string[] = [];
  for (const entry of entries) {
    const pid = ownerOf(entry);
    if (pid === undefined || pid === process.pid || isAlive(pid)) continue;
    const path = join(tmpDir(), entry);
    if (entry.startsWith(`${OUTPUT_NOTE}-`)) {
      // the note names DIR.tmp-PID; only a path of exactly that form is removed
      const half = readFileSync(path, 'utf8').trim();
      if (half.startsWith('/') && basename(half).endsWith(`.tmp-${pid}`)) {
        rmSync(half, { recursive: true, force: true });
        removed.push(half);
      }
      rmSync(path, { force: true });
      continue;
    }
    rmSync(path, { recursive: true, force: true });
    removed.push(path);
  }
  return removed;
}

/** An image file being written is <name>.json.tmp-<pid> until its rename. */
function removeHalfWrittenImages(): string[] {
  return removeStaleStaging(storeDir(), /\.json\.tmp-(\d+)$/);
}

/** Unused layers, only while no other process holds the store's lock. */
function removeOrphanLayers(): string[] {
  let fd: number;
  try {
    fd = openSync(join(storeDir(), '.lock'), 'r');
  } catch {
    return [];
  }
  try {
    if (!flock(fd, LOCK_EX | LOCK_NB)) return [];
    try {
      return removeUnusedLayers();
    } finally {
      flock(fd, LOCK_UN);
    }
  } finally {
    closeSync(fd);
  }
}

export async function clean(): Promise<string[]> {
  // jails first: a layer that only a dead jail stood on is unused once its dir is gone
  const said = cleanJailDirs();
  const half = [...removeHalfMade(), ...removeHalfWrittenImages()];
  if (half.length) said.push(`removed the half-made ${half.join(' ')}`);
  const layers = removeOrphanLayers();
  if (layers.length) said.push(`removed ${layers.length} layer${layers.length === 1 ? '' : 's'} no image uses`);
  return said;
}
