// npm run step 3 -- [--uts] [--pid] [--mount] [--net] [--ipc] [--user] [--all] [--rootfs DIR] [--hostname NAME] -- CMD
import { checkHostname, defaultCommand, jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { explain, heading } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { isRoot, requireRoot } from '../../lib/preflight.ts';
import { PREFIX } from '../../lib/state.ts';
import { jailEnv, type Namespace } from '../../lib/spec.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from './launcher.ts';
import { ALL_NAMESPACES, NAMESPACES } from './namespaces.ts';

const flags = {
  ...jailFlags,
  ...(Object.fromEntries(ALL_NAMESPACES.map((n) => [n, { type: 'boolean', help: `new ${n} namespace (${NAMESPACES[n].flag}): ${NAMESPACES[n].isolates}` }])) as Record<Namespace, { type: 'boolean'; help: string }>),
  all: { type: 'boolean', help: "all of them: the lesson's clone() call" },
} as const;

await stepEntry('Step 03: namespaces — one clone() flag at a time.', 'npm run step 3 -- [--uts] [--pid] [--mount] [--net] [--ipc] [--user] [--all] [--rootfs DIR] [--hostname NAME] [-- CMD ARGS…]', flags, async (args) => {
  const namespaces = ALL_NAMESPACES.filter((n) => args.flags.all || args.flags[n]);
  // without root, only a user namespace can give the capabilities the others need: a rootless jail
  if (!isRoot()) {
    if (!namespaces.includes('user')) requireRoot('every namespace but --user');
  }
  const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
  const hostname = args.flags.hostname && checkHostname(args.flags.hostname);
  if (hostname && !namespaces.includes('uts')) explain('(--hostname needs --uts: without a UTS namespace it would rename the host; ignored)');
  heading('Namespaces');
  for (const n of ALL_NAMESPACES) explain(`${namespaces.includes(n) ? '✔' : '·'} ${n.padEnd(5)} ${NAMESPACES[n].flag.padEnd(13)} ${NAMESPACES[n].isolates}`);
  explain('See them from the host: lsns, or ls -l /proc/PID/ns; step into one with nsenter -t PID --uts');
  return launchJail(
    {
      name: `${PREFIX}-${process.pid}`,
      rootfs,
      hostname: namespaces.includes('uts') ? hostname : undefined,
      namespaces,
      command: args.command.length ? args.command : defaultCommand,
      env: jailEnv(),
      pivot: false,
      binds: [],
    },
    { init: repoPath('steps/03-namespaces/init.ts') },
  );
});
