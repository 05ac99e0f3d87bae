// npm run step 2 [-- --rootfs DIR] [--weaknesses] [--escape] [-- CMD…]
import { jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { demonstrateEscape, demonstrateWeaknesses, runChrooted } from './chroot.ts';

const flags = {
  rootfs: jailFlags.rootfs,
  weaknesses: { type: 'boolean', help: 'show what chroot leaves shared with the host' },
  escape: { type: 'boolean', help: 'show a root process walking out of the chroot' },
} as const;

await stepEntry('Step 02: chroot — lock a process into the rootfs, and see what that does not do.', 'npm run step 2 -- [--rootfs DIR] [--weaknesses] [--escape] [-- CMD ARGS…]', flags, async (args) => {
  requireRoot('chroot');
  const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
  const { weaknesses, escape } = args.flags;
  if (args.command.length && (weaknesses || escape)) throw new JailError('give either a command or a demonstration, not both', undefined, 2);
  if (weaknesses) await demonstrateWeaknesses(rootfs);
  if (escape) await demonstrateEscape(rootfs);
  if (weaknesses || escape) return 0;
  if (args.command.length) return runChrooted(rootfs, args.command);
  // the guided tour: what you see inside, what is still shared, and the way out
  heading('Inside the chroot, / is the rootfs');
  await runChrooted(rootfs, ['ls', '/']);
  await demonstrateWeaknesses(rootfs);
  await demonstrateEscape(rootfs);
  heading('Try it yourself');
  explain(`sudo npm run step 2 -- -- /bin/sh     (a shell in ${rootfs}; exit with Ctrl-D)`);
  return 0;
});
