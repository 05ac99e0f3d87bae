// npm run clean, step 01's part: a build killed with SIGKILL leaves its
// half-made tree (ROOTFS.building-PID) beside the rootfs it was to replace.
import { join } from 'node:path';
import { jailHome, removeStaleStaging } from '../../lib/state.ts';

export async function clean(): Promise<string[]> {
  // ROOTFS.building-PID: left alone while PID still builds it
  return removeStaleStaging(join(jailHome(), 'rootfs'), /\.building-(\d+)$/).map((p) => `removed the half-built ${p}`);
}
