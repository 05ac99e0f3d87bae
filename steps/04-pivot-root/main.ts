// npm run step 4 -- [--rootfs DIR | --debian] [--hostname NAME] [--user] [--try-escape] -- CMD
import { checkHostname, jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading } from '../../lib/output.ts';
import { shellQuote } from '../../lib/sh.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { rootfsDir } from '../../lib/state.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotFlags, pivotSpec } from './jail.ts';

const flags = { ...jailFlags, ...pivotFlags } as const;

// not awaited at the top level: lib/bundle.mjs can then make this entry one
// CommonJS script, which starts from V8's code cache (lib/bundle.mjs runScript)
void stepEntry('Step 04: the god process — PID 1 builds /proc /sys /dev and pivot_roots.', 'npm run step 4 -- [--rootfs DIR | --debian] [--hostname NAME] [--user] [-- CMD ARGS…]', flags, async (args) => {
  requireRoot();
  if (args.flags.debian && args.flags.rootfs) throw new JailError('give --rootfs or --debian, not both', undefined, 2);
  const rootfs = requireRootfs(args.flags.debian ? rootfsDir('debian') : rootfsOrDefault(args.flags.rootfs));
  const hostname = checkHostname(args.flags.hostname ?? 'jail');
  const spec = { ...pivotSpec(rootfs, hostname, args.flags.user, args.command), tryEscape: args.flags['try-escape'] };
  heading('The god process (PID 1) will, inside the new namespaces:');
  for (const line of [
    'mount --make-rprivate /                 so nothing propagates back to the host',
    `mount --bind ROOTFS ROOTFS              pivot_root needs a mount point (ROOTFS=${rootfs})`,
    'mount -t proc proc ROOTFS/proc          processes of this PID namespace only',
    'mount -t sysfs -o ro sysfs ROOTFS/sys',
    'mount -t tmpfs tmpfs ROOTFS/dev; mknod null zero full random urandom tty; devpts; shm',
    `hostname ${hostname}`,
    'cd ROOTFS; pivot_root . .; umount -l .     the old root, stacked on top, detached',
    spec.tryEscape ? "then try step 02's escape and report where it lands" : `then start ${shellQuote(spec.command)} as its child, and reap, forward signals, wait`,
  ]) explain(line);
  return launchJail(spec, { init: initPath });
});
