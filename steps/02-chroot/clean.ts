// npm run clean, step 02's part: the escape demonstration's marker dir in
// /tmp, if the demonstration was killed before it could remove it.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export async function clean(): Promise<string[]> {
  const left = readdirSync('/tmp').filter((e) => e.startsWith('baj-escape-')).map((e) => join('/tmp', e));
  for (const p of left) rmSync(p, { recursive: true, force: true });
  return left.map((p) => `removed ${p}`);
}
