// Step 09's run verb: `npm run step 9 -- --image NAME [--name JAIL] [--keep]
// [step 05-08 flags] -- CMD`. Step 08's locked jail (every lock on unless
// the flags say otherwise), limited by step 06, networked by step 05, whose
// root is an overlay of the image's layers under a top of its own.
// Everything is checked before anything is made: a bad flag, an unknown
// image or a taken name is one sentence, and leaves nothing behind.
import { checkHostname, jailFlags, type ParsedArgs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { PREFIX } from '../../lib/state.ts';
import type { StartedInit } from '../03-namespaces/launcher.ts';
import { pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, networkFlags, withNetwork } from '../05-network-bridge/modes.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { showTopology } from '../05-network-bridge/topology.ts';
import { cgroupHook } from '../06-cgroups/cgroups.ts';
import type { JailCgroup } from '../06-cgroups/hierarchy.ts';
import type { Limits } from '../06-cgroups/limits.ts';
import { cgroupFlags, checkDevices, deviceFlag, limitsFromFlags } from '../06-cgroups/flags.ts';
import { deviceRules, hardenedSpec, hardenFlags, initPath, launchHardened, locksFromFlags, type HardenedSpec } from '../08-hardening/jail.ts';
import { openLibseccomp } from '../08-hardening/seccomp.ts';
import { checkJailNameFree, overlayHook, overlayPaths, overlayRootOf } from './overlay.ts';
import { ensureImage, type Image } from './store.ts';

export const runFlags = {
  image: { type: 'string', value: 'NAME', help: 'the image whose layers are the root (default busybox; `images` lists them)', default: 'busybox' },
  hostname: jailFlags.hostname,
  ...networkFlags,
  net: { ...networkFlags.net, default: 'none', help: "none (only lo; the default), host (the host's network) or bridge (an address of its own on baj0)" },
  name: { ...networkFlags.name, help: "the jail's name: its dir $JAIL_HOME/overlay/NAME, what commit takes (default: baj-PID)" },
  keep: { type: 'boolean', help: "keep the jail's upper dir when it exits, for commit (needs --name)" },
  ...cgroupFlags,
  ...deviceFlag,
  ...hardenFlags,
} as const;

export type RunFlags = ParsedArgs<typeof runFlags>['flags'];

/** 'KEY=value' lines of an image's config, over the clean environment of every jail. */
const envOf = (image: Image): Record<string, string> => Object.fromEntries(image.config.env.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]).filter(([k]) => k));

/** For a caller that runs jails itself (step 10's shim): another init, and what the launcher hears. */
export interface RunOptions {
  /** The init's TypeScript entry (default: step 08's, which mounts spec.overlay as the root). */
  init?: string;
  /** The target runs: the init's host PID, and the jail's address on the bridge (--net bridge). */
  onStarted?: (initPid: number, ip?: string) => void;
  onMessage?: (line: string) => void;
  onChannel?: (send: (line: string) => void) => void;
  /** An init started in advance in this jail's namespaces (step 10's pool). */
  parked?: StartedInit;
  /** Its cgroup, made and joined in advance (step 06's joinAhead): the hook only writes the limits. */
  cgroup?: JailCgroup;
}

/**
 * The jail the flags ask for, before its image, root and name: namespaces,
 * locks, hostname, network. Step 10's pool starts its waiting inits with the
 * shape of the usual request.
 */
export function jailShape(f: RunFlags, command: string[] = []): HardenedSpec {
  const base = withNetwork(pivotSpec('', checkHostname(f.hostname ?? 'jail'), false, command), networkChoice(f), f.name);
  return hardenedSpec(base, locksFromFlags(f));
}

/** Step 06's limits for the flags, with step 08's device lock as device rules. */
export function jailLimits(f: RunFlags): Limits {
  return { ...limitsFromFlags(f), devices: deviceRules(locksFromFlags(f), checkDevices(f.device)) };
}

export async function runOnImage(f: RunFlags, command: string[], opts: RunOptions = {}): Promise<number> {
  requireRoot();
  // every flag first: nothing exists yet
  const locks = locksFromFlags(f);
  const limits = jailLimits(f);
  const choice = networkChoice(f);
  const devices = checkDevices(f.device);
  if (f.keep && !f.name) throw new JailError("--keep keeps the jail's upper for commit, which names the jail: give --name too", 'e.g. --name web --keep, then: npm run step 9 -- commit web my-image', 2);
  const base = jailShape(f, command);
  const name = f.name ?? `${PREFIX}-${process.pid}`;
  if (locks.seccomp) openLibseccomp(); // a missing library is said before anything is made
  checkJailNameFree(name);
  // a built-in image is made from step 01's rootfs on its first use
  const image = await ensureImage(f.image!);
  const spec: HardenedSpec = {
    ...base,
    rootfs: overlayPaths(name).merged,
    devices,
    command: command.length ? command : image.config.cmd.length ? image.config.cmd : base.command,
    env: { ...base.env, ...envOf(image) },
    overlay: overlayRootOf(name, image, locks.userns),
  };

  heading(`Jail ${name} on image ${image.name}: step 08's locked jail, its root an overlay`);
  explain(`lower: ${image.layers.length} read-only layer${image.layers.length === 1 ? '' : 's'} of the image; upper: a private dir, ${f.keep ? 'kept (--keep)' : 'removed at the end'}`);
  explain(`locks: ${locks.userns ? 'user namespace' : 'no user namespace (!)'}, ${locks.caps.length} capabilities${locks.noNewPrivs ? ', no_new_privs' : ''}${locks.seccomp ? ', seccomp' : ''}${locks.maskPaths ? ', masked paths' : ''}`);
  const net = networkHook(choice);
  const cgroup = cgroupHook(limits, { joined: opts.cgroup });
  const status = await launchHardened(spec, {
    init: opts.init ?? initPath,
    hooks: [net, cgroup],
    rootHook: (ranges) => overlayHook({ name, image, keep: f.keep }, ranges),
    onStarted: (pid) => {
      showTopology(net);
      opts.onStarted?.(pid, net.address);
    },
    onMessage: opts.onMessage,
    onChannel: opts.onChannel,
    parked: opts.parked,
  });
  if (f.keep) explain(`kept: ${overlayPaths(name).upper}; make it an image with: npm run step 9 -- commit ${name} NEW-IMAGE`);
  return status;
}
