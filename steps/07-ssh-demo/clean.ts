// npm run clean, step 07's part: the ssh demo's top (upper, work) if its
// launcher was killed before it could remove it, and the private copy of
// Debian that the demo used before it ran on an overlay.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { jailHome } from '../../lib/state.ts';
import { runningPid } from './demo.ts';
import { cleanDemoRoot } from './root.ts';

export async function clean(): Promise<string[]> {
  const removed = cleanDemoRoot(runningPid() !== undefined);
  const oldCopy = join(jailHome(), 'rootfs', 'ssh-demo');
  if (existsSync(oldCopy)) {
    rmSync(oldCopy, { recursive: true, force: true });
    removed.push(`removed ${oldCopy}, the ssh demo's old copy of Debian (it runs on an overlay of rootfs/debian now)`);
  }
  return removed;
}
