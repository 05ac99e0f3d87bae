// npm run step 1 [-- --debian [--suite S] [--mirror URL]] [--dest DIR]
import { stepEntry } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { rootfsDir } from '../../lib/state.ts';
import { buildBusyboxRootfs, buildDebianRootfs } from './rootfs.ts';

const flags = {
  debian: { type: 'boolean', help: 'build a Debian rootfs with debootstrap instead of busybox' },
  suite: { type: 'string', value: 'NAME', help: "Debian/Ubuntu suite (default: the host's, e.g. bookworm)" },
  mirror: { type: 'string', value: 'URL', help: "archive mirror (default: the host's apt mirror)" },
  dest: { type: 'string', value: 'DIR', help: 'where to build (default: $JAIL_HOME/rootfs/busybox or …/debian)' },
} as const;

await stepEntry('Step 01: build a root filesystem — the cell of the prison.', 'npm run step 1 -- [--debian [--suite S] [--mirror URL]] [--dest DIR]', flags, async (args) => {
  if (args.command.length) throw new JailError(`step 1 builds a rootfs and runs no command (got: ${args.command.join(' ')})`, 'flags go before any --, e.g. npm run step 1 -- --debian', 2);
  requireRoot('building a rootfs');
  const { debian, suite, mirror, dest } = args.flags;
  const dir = dest ?? rootfsDir(debian ? 'debian' : 'busybox');
  if (debian) await buildDebianRootfs(dir, { suite, mirror });
  else await buildBusyboxRootfs(dir);
  heading('Look inside');
  showCommand(`ls ${dir}`);
  showCommand(`sudo chroot ${dir} /bin/sh`);
  explain('or go on with step 2: sudo npm run step 2');
  return 0;
});
