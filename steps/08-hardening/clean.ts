// npm run clean, step 08's part: what a killed escape lab left on the host
// (its marker files, the baj-lab0 link, a key in root's keyring) and the
// half-built chowned copies of a rootfs (the user namespace's fallback).
import { cleanLab } from './lab-fixtures.ts';
import { removeHalfBuiltCopies } from './userns.ts';

export async function clean(): Promise<string[]> {
  return [...(await cleanLab()), ...removeHalfBuiltCopies()];
}
