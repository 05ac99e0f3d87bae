// npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [--device PATH] [network flags] -- CMD
import { checkHostname, jailFlags, parseArgs, rootfsOrDefault, usage } from '../../lib/cli.ts';
import { statSync } from 'node:fs';
import { JailError, runMain } from '../../lib/errors.ts';
import { explain } from '../../lib/output.ts';
import { cgroupMode, requireRoot } from '../../lib/preflight.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, networkFlags, withNetwork } from '../05-network-bridge/modes.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { showTopology } from '../05-network-bridge/topology.ts';
import { cgroupHook } from './cgroups.ts';
import { cgroupFlags, limitsFromFlags } from './flags.ts';

const flags = {
  ...jailFlags,
  ...cgroupFlags,
  device: { type: 'list', value: 'PATH', help: "a host block or character device to put in the jail's /dev (docker run --device), e.g. to test --io-write-bps" },
  ...networkFlags,
  net: { ...networkFlags.net, default: 'none', help: "none (only lo; the default), host (the host's network) or bridge (an address of its own on baj0)" },
} as const;

/** Only device nodes: --device /etc/passwd would be a bind mount in disguise. */
function checkDevices(paths: string[]): string[] {
  for (const p of paths) {
    let ok = false;
    try {
      const st = statSync(p);
      ok = st.isBlockDevice() || st.isCharacterDevice();
    } catch {}
    if (!ok) throw new JailError(`--device ${p}: not a device node on this host`, 'e.g. --device /dev/loop0 (see losetup --find --show FILE)', 2);
  }
  return paths;
}

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Step 06: cgroups — ration CPU, memory, processes and disk speed, and prove it from inside.', 'npm run step 6 -- [--cpus N] [--cpuset LIST] [--memory SIZE] [--pids N] [--io-read-bps DEV:RATE] [--io-write-bps DEV:RATE] [--device PATH] [--net none|host|bridge] [--ip ADDR] [--publish HOST:JAIL]… [--name NAME] [-- CMD ARGS…]', flags));
    return 0;
  }
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
