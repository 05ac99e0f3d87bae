// npm run step 8 -- [--rootfs DIR | --debian] [--hostname NAME] [network flags] [limits]
//                   [--privileged] [--cap-add CAP]… [--cap-drop CAP]… [--security-opt OPT]… -- CMD
// npm run step 8          (no command): the escape lab, every escape out of --privileged and out of the locked jail
import { checkHostname, jailFlags, rootfsOrDefault, stepEntry } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { rootfsDir } from '../../lib/state.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { pivotFlags, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, networkFlags, withNetwork } from '../05-network-bridge/modes.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { showTopology } from '../05-network-bridge/topology.ts';
import { cgroupHook } from '../06-cgroups/cgroups.ts';
import { cgroupFlags, checkDevices, deviceFlag, limitsFromFlags } from '../06-cgroups/flags.ts';
import { DOCKER_DEFAULT_CAPS } from './capabilities.ts';
import { deviceRules, hardenedSpec, hardenFlags, launchHardened, locksFromFlags, type Locks } from './jail.ts';
import { runSshDemo, sshDemoFlags } from '../07-ssh-demo/demo.ts';
import { overlayOf } from '../07-ssh-demo/root.ts';
import { overlayForUserns } from './overlay-userns.ts';
import { runEscapeLab } from './lab.ts';
import { openLibseccomp } from './seccomp.ts';

const flags = {
  ...jailFlags,
  debian: pivotFlags.debian,
  ...networkFlags,
  net: { ...networkFlags.net, default: 'none', help: "none (only lo; the default), host (the host's network) or bridge (an address of its own on baj0)" },
  ...cgroupFlags,
  ...deviceFlag,
  ...hardenFlags,
  lab: { type: 'list', value: 'NAME', help: 'with no command: run only these escapes of the lab (e.g. core_pattern)' },
  ssh: { type: 'boolean', help: "the finale again: step 07's sshd jail with every lock on (with --detach, --stop, --listen, --net host|bridge)" },
} as const;

/** --ssh: step 07's flags, plus the locks. */
const sshFlags = { ...sshDemoFlags, ...hardenFlags, ssh: flags.ssh } as const;

/** What PID 1 will do, in order: which lock comes before pivot_root, which after, and why seccomp is last. */
function showPlan(locks: Locks, rootfs: string): void {
  const on = (b: boolean) => (b ? '' : '   (off)');
  heading('The locked jail, in the order it is built:');
  for (const line of [
    `clone(…|CLONE_NEWUSER)   user namespace: root inside is ${locks.userns ? "an unprivileged uid from the jail's range" : 'uid 0, the host\'s root (!)'} outside${on(locks.userns)}`,
    `  launcher: uid_map/gid_map, then the rootfs idmapped (or a chowned copy) in the jail's mount namespace${on(locks.userns)}`,
    '  init: load libseccomp and build the filter   while the host\'s /lib is still reachable' + on(locks.seccomp),
    `  init: private mounts, bind ${rootfs}, /proc /sys /dev, hostname, pivot_root (step 04)`,
    '  init: mask /proc/kcore … and make /proc/sys … read-only   mounts, so before seccomp forbids them' + on(locks.maskPaths),
    '  init, main thread, just before the spawn:',
    `    capabilities: bounding set, then capset, ambient cleared   ${locks.caps.length === DOCKER_DEFAULT_CAPS.length && DOCKER_DEFAULT_CAPS.every((c) => locks.caps.includes(c)) ? "Docker's 14" : `${locks.caps.length} kept`}`,
    '    no_new_privs                               no execve can raise privileges again' + on(locks.noNewPrivs),
    '    seccomp, last                              after it mount and pivot_root are gone; unprivileged, it needs no_new_privs' + on(locks.seccomp),
    '  then posix_spawn(CMD): the target inherits every lock from that thread',
  ]) explain(line);
}

const title = 'Step 08: the locks — user namespace, capabilities, no_new_privs, seccomp, masked paths; and the escape lab.';
const synopsis = [
  'npm run step 8 -- [--rootfs DIR | --debian] [--net none|host|bridge] [limits…] [--device PATH]… [--privileged] [--cap-add CAP]… [--cap-drop CAP]… [--security-opt OPT]… [-- CMD ARGS…]',
  '       npm run step 8                  (no command: the escape lab)',
  '       npm run step 8 -- --ssh [--detach | --stop] [--net host|bridge] [--listen ADDR]   (the finale, locked)',
].join('\n');

// --ssh before any `--` picks the finale's flags (after `--` it would be the command's)
const flagArgs = process.argv.slice(2, process.argv.indexOf('--') === -1 ? undefined : process.argv.indexOf('--'));
if (flagArgs.includes('--ssh')) {
  await stepEntry(title, synopsis, sshFlags, async (args, argv) => {
    const locks = locksFromFlags(args.flags);
    if (locks.seccomp && !args.flags.stop) openLibseccomp(); // a missing library is said before anything is made
    return runSshDemo(args.flags, args.command, {
      step: 8,
      argv,
      // the demo's overlay root: with a user namespace, its layer and top made usable by the mapped root first
      launch: (spec, o) =>
        launchHardened(hardenedSpec({ ...spec, overlay: overlayOf(o.root.dirs, locks.userns) }, locks), {
          hooks: o.hooks,
          onStarted: o.onStarted,
          rootHook: (ranges) => (ranges ? { ...o.root.hook, attach: (_s, pid, cleanup) => overlayForUserns(pid, { ...o.root.dirs, lower: [o.root.dirs.lower] }, ranges, cleanup) } : o.root.hook),
        }),
      devices: deviceRules(locks),
    });
  });
}

await stepEntry(title, synopsis, flags, async (args) => {
  requireRoot();
  if (args.flags.ssh) throw new JailError('unreachable: --ssh is handled above');
  // every flag is checked before anything is made: a bad capability name leaves nothing behind
  const locks = locksFromFlags(args.flags);
  if (!args.command.length) {
    // the lab: the locked jail is the default one, or the one the flags ask for (e.g. seccomp=unconfined, to see which wall holds next)
    if (args.flags.privileged) throw new JailError('the lab already tries every escape in a --privileged jail; --privileged would unlock the other one too', 'drop --privileged, or give a command to run in a privileged jail', 2);
    const tuned = args.flags['cap-add'].length + args.flags['cap-drop'].length + args.flags['security-opt'].length > 0;
    return runEscapeLab({ only: args.flags.lab.flatMap((n) => n.split(',')), locks: tuned ? locks : undefined });
  }
  if (args.flags.lab.length) throw new JailError('--lab runs the escape lab, which takes no command', 'drop the command, or --lab', 2);
  const limits = limitsFromFlags(args.flags);
  const choice = networkChoice(args.flags);
  if (args.flags.debian && args.flags.rootfs) throw new JailError('give --rootfs or --debian, not both', undefined, 2);
  const rootfs = requireRootfs(args.flags.debian ? rootfsDir('debian') : rootfsOrDefault(args.flags.rootfs));
  const hostname = checkHostname(args.flags.hostname ?? 'jail');
  const devices = checkDevices(args.flags.device);
  const spec = hardenedSpec({ ...withNetwork(pivotSpec(rootfs, hostname, false, args.command), choice, args.flags.name), devices }, locks);
  if (locks.seccomp) openLibseccomp(); // a missing library is said before anything is shown or made
  showPlan(locks, rootfs);
  const net = networkHook(choice);
  // the device cgroup: only step 04's minimal /dev, and the devices given with --device, may be opened
  // (--privileged: every device, as in steps 04-07)
  const cgroup = cgroupHook({ ...limits, devices: deviceRules(locks, devices) });
  return launchHardened(spec, { hooks: [net, cgroup], onStarted: () => showTopology(net) });
});
