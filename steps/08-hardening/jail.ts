// Step 08's jail as data: step 04-07's jail plus its locks, with Docker's
// spellings for turning them up or down (--privileged, --cap-add,
// --cap-drop, --security-opt), and the launch that does what a user
// namespace needs from the host (its ID range, its rootfs) before the init goes.
import type { FlagSpecs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { repoPath } from '../../lib/paths.ts';
import type { JailHook, JailSpec, Namespace } from '../../lib/spec.ts';
import { launchJail, type StartedInit } from '../03-namespaces/launcher.ts';
import { deviceRule } from '../06-cgroups/flags.ts';
import { MINIMAL_DEVICE_RULES } from '../06-cgroups/limits.ts';
import { ALL_NAMESPACES } from '../03-namespaces/namespaces.ts';
import { capabilityName, DOCKER_DEFAULT_CAPS, hostCapabilities } from './capabilities.ts';
import { openLibseccomp } from './seccomp.ts';
import { jailIdRanges, type IdRanges } from '../03-namespaces/idrange.ts';
import { userNamespaceRootfs } from './userns.ts';

export interface Locks {
  /** A user namespace: root inside is an unprivileged uid outside. */
  userns: boolean;
  /** The capabilities kept, by name ('CAP_CHOWN' …); every other one leaves all five sets. */
  caps: string[];
  /** PR_SET_NO_NEW_PRIVS: execve never grants more (setuid, file caps). */
  noNewPrivs: boolean;
  /** The seccomp deny list (seccomp.ts), loaded last. */
  seccomp: boolean;
  /** runc's masked and read-only /proc and /sys paths (paths.ts). */
  maskPaths: boolean;
  /** The device cgroup (v1): only step 04's minimal /dev, and the devices given with --device, may be opened. */
  devices: boolean;
}

/** Every lock on. Docker leaves no_new_privs and the user namespace off by default; we do not (see the lesson). */
export const DEFAULT_LOCKS: Locks = Object.freeze({ userns: true, caps: [...DOCKER_DEFAULT_CAPS], noNewPrivs: true, seccomp: true, maskPaths: true, devices: true }) as Locks;

/** Every lock off: steps 04-07's jail, root with every capability the host's root has. */
export const PRIVILEGED: Locks = Object.freeze({ userns: false, caps: hostCapabilities(), noNewPrivs: false, seccomp: false, maskPaths: false, devices: false }) as Locks;

export const hardenFlags = {
  privileged: { type: 'boolean', help: 'turn every lock off: the jail of steps 04-07 (docker run --privileged)' },
  'cap-add': { type: 'list', value: 'CAP', help: 'keep a capability as well, e.g. NET_ADMIN or CAP_SYS_TIME; ALL keeps every one' },
  'cap-drop': { type: 'list', value: 'CAP', help: 'drop a capability of the default 14 too, e.g. CHOWN; ALL drops every one' },
  'security-opt': { type: 'list', value: 'OPT', help: 'seccomp=unconfined (no filter), no-new-privileges=false, systempaths=unconfined (no masked paths)' },
} as const satisfies FlagSpecs;

export interface HardenFlags {
  privileged: boolean;
  'cap-add': string[];
  'cap-drop': string[];
  'security-opt': string[];
}

/** The locks the flags ask for. Everything is checked before anything is made; bad input exits 2. */
export function locksFromFlags(flags: HardenFlags): Locks {
  if (flags.privileged && flags['cap-add'].length) {
    throw new JailError('--cap-add means nothing with --privileged, which keeps every capability already', undefined, 2);
  }
  const names = (list: string[]) => list.map((c) => (c.trim().toUpperCase() === 'ALL' ? 'ALL' : capabilityName(c)));
  const add = names(flags['cap-add']);
  const drop = names(flags['cap-drop']);
  const both = add.find((c) => c !== 'ALL' && drop.includes(c));
  if (both) throw new JailError(`${both} is both added and dropped; give one of --cap-add and --cap-drop`, undefined, 2);
  const host = hostCapabilities();
  const missing = add.find((c) => c !== 'ALL' && !host.includes(c));
  if (missing) throw new JailError(`the host's root itself lacks ${missing}, so no jail of it can keep it`, undefined, 2);

  const locks: Locks = { ...(flags.privileged ? PRIVILEGED : DEFAULT_LOCKS) };
  // Docker's order: ALL first, then single drops, then single adds
  let caps = [...locks.caps];
  if (add.includes('ALL')) caps = [...host];
  if (drop.includes('ALL')) caps = [];
  caps = caps.filter((c) => !drop.includes(c));
  for (const c of add) if (c !== 'ALL' && !caps.includes(c)) caps.push(c);
  locks.caps = caps;

  for (const opt of flags['security-opt']) {
    const [key = '', value = 'true'] = opt.split(/[=:]/, 2).map((s) => s.trim().toLowerCase());
    if (key === 'seccomp' && value === 'unconfined') locks.seccomp = false;
    else if (key === 'no-new-privileges' && (value === 'true' || value === 'false')) locks.noNewPrivs = value === 'true';
    else if (key === 'systempaths' && value === 'unconfined') locks.maskPaths = false;
    else {
      throw new JailError(`--security-opt ${opt}: not an option this jail knows; it knows seccomp=unconfined, no-new-privileges[=true|false] and systempaths=unconfined`, undefined, 2);
    }
  }
  return locks;
}

export type HardenedSpec = JailSpec & { locks: Locks; escape?: string };

/**
 * The device lock as step 06's limit: v1 device-cgroup allow rules for the
 * minimal /dev and each --device node; undefined (every device) with the lock off.
 */
export function deviceRules(locks: Locks, devices: string[] = []): readonly string[] | undefined {
  return locks.devices ? [...MINIMAL_DEVICE_RULES, ...devices.map(deviceRule)] : undefined;
}

/** The user namespace is a lock too: it is in the namespaces exactly when locks.userns is. */
export function hardenedSpec(base: JailSpec, locks: Locks): HardenedSpec {
  const wanted = new Set<Namespace>(base.namespaces.filter((n) => n !== 'user'));
  if (locks.userns) wanted.add('user');
  return { ...base, namespaces: ALL_NAMESPACES.filter((n) => wanted.has(n)), locks };
}

/** Step 08's init: step 04's god process with the locks between its two halves. */
export const initPath = repoPath('steps/08-hardening/init.ts');

export interface HardenedLaunchOptions {
  hooks?: JailHook[];
  onStarted?: (initPid: number) => void;
  /** Lines the init reports (the escape lab's "result {…}"). */
  onMessage?: (line: string) => void;
  /** After "go": how to send the init a line (step 10's exec requests). */
  onChannel?: (send: (line: string) => void) => void;
  /** The init's TypeScript entry (default: step 08's, whose root is a bind of spec.rootfs). */
  init?: string;
  /**
   * The hook that makes the jail's root usable, run before every other hook;
   * given the ID ranges with a user namespace, undefined without one.
   * Default: step 08's idmapped (or chowned) rootfs with a user namespace,
   * nothing without. Step 09 passes its overlay of an image's layers.
   */
  rootHook?: (ranges: IdRanges | undefined) => JailHook | undefined;
  /** An init started in advance (step 10's pool: step 03's parkInit), in this jail's namespaces. */
  parked?: StartedInit;
}

/**
 * Step 03's launchJail with step 08's init. With a user namespace it maps
 * root to the jail's range and runs first among the hooks, so that the
 * rootfs is usable by the mapped root before any other hook looks at it.
 */
export async function launchHardened(spec: HardenedSpec, opts: HardenedLaunchOptions = {}): Promise<number> {
  // before anything exists: a missing libseccomp must leave nothing behind
  if (spec.locks.seccomp) openLibseccomp();
  const jail = hardenedSpec(spec, spec.locks);
  const hooks = [...(opts.hooks ?? [])];
  const idRanges = jail.locks.userns ? jailIdRanges() : undefined;
  const root = opts.rootHook ? opts.rootHook(idRanges) : idRanges && userNamespaceRootfs(idRanges);
  if (root) hooks.unshift(root);
  return launchJail(jail, { init: opts.init ?? initPath, hooks, onStarted: opts.onStarted, onMessage: opts.onMessage, onChannel: opts.onChannel, idRanges, parked: opts.parked });
}
