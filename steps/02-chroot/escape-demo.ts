// node --import tsx steps/02-chroot/escape-demo.ts ROOTFS FILE
// A root process locks itself into ROOTFS, shows what it sees, escapes, and
// prints FILE (a path on the host) to prove where it ended up.
import { readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { chdir, chroot } from '../../lib/libc.ts';
import { escapeChroot } from './escape.ts';

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
