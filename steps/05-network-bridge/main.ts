// npm run step 5 -- [--net none|host|bridge] [--ip ADDR] [--publish HOST:JAIL]… [--name NAME] -- CMD
import { checkHostname, jailFlags, parseArgs, rootfsOrDefault, usage } from '../../lib/cli.ts';
import { JailError, runMain } from '../../lib/errors.ts';
import { explain, heading } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { PREFIX } from '../../lib/state.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkHook, networkNamespaces, parseNetworkMode, parsePublish, type NetworkHook, type NetworkMode, type PortMapping } from './network.ts';

export const networkFlags = {
  net: { type: 'string', value: 'MODE', help: 'none (only lo), host (the host\'s network) or bridge (default)', default: 'bridge' },
  ip: { type: 'string', value: 'ADDR', help: 'the jail\'s address on the bridge (default: the next free one)' },
  publish: { type: 'list', value: 'HOST:JAIL', help: 'make the jail\'s TCP port JAIL reachable on the host\'s port HOST' },
  name: { type: 'string', value: 'NAME', help: 'a name for the jail (default: its launcher\'s pid)' },
} as const;

export interface NetworkChoice {
  mode: NetworkMode;
  ip?: string;
  publish: PortMapping[];
}

/** Checks the network flags together: --ip and --publish only mean something on the bridge. */
export function networkChoice(f: { net?: string; ip?: string; publish: string[] }): NetworkChoice {
  const mode = parseNetworkMode(f.net ?? 'bridge');
  const publish = f.publish.map(parsePublish);
  if (mode !== 'bridge' && (f.ip || publish.length)) {
    throw new JailError(`--ip and --publish need --net bridge (the jail has no address of its own with --net ${mode})`, undefined, 2);
  }
  return { mode, ip: f.ip, publish };
}

/** Step 04's jail, with the network namespace only when the mode wants one. */
export function withNetwork(spec: JailSpec, choice: NetworkChoice, name?: string): JailSpec {
  if (name !== undefined && !/^[a-z0-9][a-z0-9-]{0,19}$/.test(name)) {
    throw new JailError(`'${name}' is not a jail name`, 'use up to 20 lowercase letters, digits and hyphens, e.g. web-1', 2);
  }
  const net = networkNamespaces(choice.mode);
  return {
    ...spec,
    name: name ? `${PREFIX}-${name}` : spec.name,
    namespaces: spec.namespaces.filter((n) => n !== 'net' || net.includes('net')),
  };
}

/** Prints the picture of what was built, once the jail runs. */
export function showTopology(hook: NetworkHook): void {
  const picture = hook.topology();
  if (!picture) return;
  heading('The network you just built');
  for (const line of picture.split('\n')) explain(line);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const flags = { ...jailFlags, ...networkFlags } as const;
  await runMain(async () => {
    const args = parseArgs(process.argv.slice(2), flags);
    if (args.help) {
      console.log(usage("Step 05: the visiting room — none, host and bridge networking with veth pairs.", 'npm run step 5 -- [--net none|host|bridge] [--ip ADDR] [--publish HOST:JAIL]… [--name NAME] [-- CMD ARGS…]', flags));
      return 0;
    }
    requireRoot();
    const choice = networkChoice(args.flags);
    const rootfs = requireRootfs(rootfsOrDefault(args.flags.rootfs));
    const hostname = checkHostname(args.flags.hostname ?? 'jail');
    const spec = withNetwork(pivotSpec(rootfs, hostname, false, args.command), choice, args.flags.name);
    const hook = networkHook(choice);
    return launchJail(spec, { init: initPath, hooks: [hook], onStarted: () => showTopology(hook) });
  });
}
