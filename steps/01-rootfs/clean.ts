// npm run clean, step 01's part: a build killed with SIGKILL leaves its
// half-made tree (ROOTFS.building-PID) beside the rootfs it was to replace.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { jailHome } from '../../lib/state.ts';

export async function clean(): Promise<string[]> {
  const dir = join(jailHome(), 'rootfs');
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const partial = entries.filter((e) => e.includes('.building-')).map((e) => join(dir, e));
  for (const p of partial) rmSync(p, { recursive: true, force: true });
  return partial.map((p) => `removed the half-built ${p}`);
}
