// npm run clean, step 01's part: a build killed with SIGKILL leaves its
// half-made tree (ROOTFS.building-PID) beside the rootfs it was to replace.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { isAlive, jailHome, listDir } from '../../lib/state.ts';

export async function clean(): Promise<string[]> {
  const dir = join(jailHome(), 'rootfs');
  const entries = listDir(dir);
  // ROOTFS.building-PID: left alone while PID still builds it
  const partial = entries.filter((e) => /\.building-\d+$/.test(e) && !isAlive(Number(e.split('.building-')[1]))).map((e) => join(dir, e));
  for (const p of partial) rmSync(p, { recursive: true, force: true });
  return partial.map((p) => `removed the half-built ${p}`);
}
