// npm run step 5 -- [--net none|host|bridge] [--ip ADDR] [--publish [IP:]HOST:JAIL]… [--name NAME] -- CMD
import { checkHostname, jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, networkFlags, withNetwork } from './modes.ts';
import { networkHook } from './network.ts';
import { showTopology } from './topology.ts';

const flags = { ...jailFlags, ...networkFlags } as const;

await stepEntry("Step 05: the visiting room — none, host and bridge networking with veth pairs.", 'npm run step 5 -- [--net none|host|bridge] [--ip ADDR] [--publish [IP:]HOST:JAIL]… [--name NAME] [-- CMD ARGS…]', flags, async (args) => {
  requireRoot();
  const choice = networkChoice(args.flags);
  const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
  const hostname = checkHostname(args.flags.hostname ?? 'jail');
  const spec = withNetwork(pivotSpec(rootfs, hostname, false, args.command), choice, args.flags.name);
  const hook = networkHook(choice);
  return launchJail(spec, { init: initPath, hooks: [hook], onStarted: () => showTopology(hook) });
});
