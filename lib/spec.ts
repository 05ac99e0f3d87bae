// One jail, as data. The launcher (steps/04-pivot-root/launcher.ts) turns a
// JailSpec into processes, mounts and namespaces; later steps add hooks that
// make host-side resources (a veth pair, a cgroup) around the same jail.
import type { CleanupStack } from './cleanup.ts';
import type { OverlayRoot } from './overlay.ts';

/** The namespaces of the lesson's clone() call, by util-linux's names. */
export type Namespace = 'uts' | 'pid' | 'mount' | 'net' | 'ipc' | 'user';

export interface BindMount {
  /** A path on the host. */
  source: string;
  /** A path inside the jail, e.g. /etc/resolv.conf. It must exist in the rootfs. */
  target: string;
  readonly?: boolean;
}

export interface JailSpec {
  /** Unique among running jails; starts with PREFIX. */
  name: string;
  rootfs: string;
  hostname?: string;
  namespaces: Namespace[];
  /** argv of the target program, resolved against the jail's PATH. */
  command: string[];
  env: Record<string, string>;
  /**
   * false (step 03): chroot into the rootfs and exec the command, which
   * becomes PID 1 itself. true (step 04 on): the init stays PID 1 as the
   * "god process", builds /proc /sys /dev, pivot_roots, and runs the command
   * as its child.
   */
  pivot: boolean;
  /** Host files or directories mounted into the jail before it starts. */
  binds: BindMount[];
  /** Host device nodes to put in the jail's /dev as well (docker run --device), e.g. /dev/loop0. */
  devices?: string[];
  /** Run the target with its own session and no terminal (detached jails). */
  detached?: boolean;
  /**
   * The root is an overlay mounted at `rootfs` by PID 1 (lib/overlay.ts),
   * instead of a bind of the rootfs onto itself: step 07's demo on step 01's
   * Debian tree, step 09's jails on an image's layers.
   */
  overlay?: OverlayRoot;
  /**
   * PID 1 brings the loopback of the jail's own network namespace up before
   * the target runs (step 05 asks for it; runc's init does the same).
   */
  loopbackUp?: boolean;
}

/**
 * Something a later step adds around a jail. Everything a hook creates must
 * be registered on the cleanup stack in the same place it is created.
 */
export interface JailHook {
  name: string;
  /** On the host, before the jail exists. May add binds or env to the spec. */
  prepare?(spec: JailSpec, cleanup: CleanupStack): Promise<void>;
  /** The jail's namespaces exist (initPid is its PID 1 as the host sees it); the target has not started. */
  attach?(spec: JailSpec, initPid: number, cleanup: CleanupStack): Promise<void>;
  /** The target has exited; the cleanup stack has not unwound yet. */
  report?(spec: JailSpec): Promise<void>;
}

/** A clean environment for the jail: nothing of the host's leaks in but the terminal type. */
export function jailEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    TERM: process.env.TERM || 'xterm',
    ...extra,
  };
}
