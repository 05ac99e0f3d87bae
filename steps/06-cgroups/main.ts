// npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [network flags] -- CMD
import { checkHostname, jailFlags, parseArgs, rootfsOrDefault, usage } from '../../lib/cli.ts';
import { runMain } from '../../lib/errors.ts';
import { explain } from '../../lib/output.ts';
import { cgroupMode, requireRoot } from '../../lib/preflight.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/main.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { networkChoice, networkFlags, showTopology, withNetwork } from '../05-network-bridge/main.ts';
import { cgroupFlags, cgroupHook, limitsFromFlags } from './cgroups.ts';

const flags = { ...jailFlags, ...cgroupFlags, ...networkFlags, net: { ...networkFlags.net, default: 'none' } } as const;

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Step 06: cgroups — ration CPU, memory, processes and disk speed, and prove it from inside.', 'npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [--net none|host|bridge] [-- CMD ARGS…]', flags));
    return 0;
  }
  requireRoot();
  // every flag is checked before anything is made: `--memory lots` leaves nothing behind
  const limits = limitsFromFlags(args.flags);
  const choice = networkChoice(args.flags);
  const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
  const hostname = checkHostname(args.flags.hostname ?? 'jail');
  explain(`this host's cgroups: ${cgroupMode()} (cat /proc/self/cgroup: a single "0::/…" line means pure v2)`);
  const spec = withNetwork(pivotSpec(rootfs, hostname, false, args.command), choice, args.flags.name);
  const net = networkHook(choice);
  return launchJail(spec, { init: initPath, hooks: [net, cgroupHook(limits)], onStarted: () => showTopology(net) });
});
