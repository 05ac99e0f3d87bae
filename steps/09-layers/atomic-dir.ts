// Step 09: an output directory (an OCI layout, a runc bundle) appears whole
// or not at all. It is filled in DIR.tmp-PID beside it, on the same
// filesystem, and renamed into place at the end: rename(2) is atomic, and
// it may replace an EMPTY directory, never a full one. A failure, Ctrl-C or
// SIGTERM unwinds the cleanup stack; a SIGKILL leaves DIR.tmp-PID, which the
// store's tmp/ has a note of, so that npm run clean can find it.
import { mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { CleanupStack, withSignals } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { storeTempPath } from './store.ts';

/** What names a half-made output in the store's tmp/: "DIR.tmp-PID" is in its one line. */
export const OUTPUT_NOTE = 'output';

function refuseUnlessEmpty(dir: string, what: string): void {
  let entries: string[] | undefined;
  try {
    if (!statSync(dir).isDirectory()) throw new JailError(`${dir} exists and is not a directory; the ${what} needs a new or empty one`, undefined, 2);
    entries = readdirSync(dir);
  } catch (err) {
    if (err instanceof JailError) throw err;
    return; // does not exist: fine
  }
  if (entries.length) throw new JailError(`${dir} exists and is not empty; the ${what} needs a new or empty directory`, `pick another, or remove it first: rm -r ${dir}`, 2);
}

/** Fills DIR through `fill(tmp)`, then renames it into place. Returns the absolute DIR. */
export async function buildDirAtomically(dir: string, what: string, fill: (tmp: string) => Promise<void>): Promise<string> {
  const target = resolve(dir);
  refuseUnlessEmpty(target, what);
  try {
    statSync(dirname(target));
  } catch {
    throw new JailError(`${dirname(target)} does not exist, so ${basename(target)} cannot be made in it`, `mkdir -p ${dirname(target)} first`, 2);
  }
  const tmp = `${target}.tmp-${process.pid}`;
  await using cleanup = new CleanupStack();
  const note = storeTempPath(OUTPUT_NOTE);
  writeFileSync(note, tmp + '\n');
  cleanup.defer(`remove ${note}`, () => rmSync(note, { force: true }));
  cleanup.defer(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  const interrupted = () => void cleanup.unwind().then(() => process.exit(130));
  await withSignals(interrupted, async () => {
    mkdirSync(tmp, { mode: 0o755 });
    await fill(tmp);
    refuseUnlessEmpty(target, what); // someone may have filled it while we worked
    renameSync(tmp, target);
  });
  return target;
}
