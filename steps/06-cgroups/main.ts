// npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [--device PATH] [network flags] -- CMD
import { checkHostname, jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { explain } from '../../lib/output.ts';
import { cgroupMode, requireRoot } from '../../lib/preflight.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, networkFlags, withNetwork } from '../05-network-bridge/modes.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { showTopology } from '../05-network-bridge/topology.ts';
import { cgroupHook } from './cgroups.ts';
import { cgroupFlags, checkDevices, deviceFlag, limitsFromFlags } from './flags.ts';

const flags = {
  ...jailFlags,
  ...cgroupFlags,
  ...deviceFlag,
  ...networkFlags,
  net: { ...networkFlags.net, default: 'none', help: "none (only lo; the default), host (the host's network) or bridge (an address of its own on baj0)" },
} as const;

await stepEntry('Step 06: cgroups — ration CPU, memory, processes and disk speed, and prove it from inside.', 'npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [--device PATH] [--net none|host|bridge] [--ip ADDR] [--publish HOST:JAIL]… [--name NAME] [-- CMD ARGS…]', flags, async (args) => {
  requireRoot();
  // every flag is checked before anything is made: `--memory lots` leaves nothing behind
  const limits = limitsFromFlags(args.flags);
  const choice = networkChoice(args.flags);
  const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
  const hostname = checkHostname(args.flags.hostname ?? 'jail');
  explain(`this host's cgroups: ${cgroupMode()} (cat /proc/self/cgroup: a single "0::/…" line means pure v2)`);
  const spec = { ...withNetwork(pivotSpec(rootfs, hostname, false, args.command), choice, args.flags.name), devices: checkDevices(args.flags.device) };
  const net = networkHook(choice);
  return launchJail(spec, { init: initPath, hooks: [net, cgroupHook(limits)], onStarted: () => showTopology(net) });
});
