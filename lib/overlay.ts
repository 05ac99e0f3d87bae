// A jail's root as an overlay: the text's AUFS in today's kernel. One
// mount(2), by PID 1, in the jail's own mount namespace, where it stays
// invisible to the host and goes away with the jail:
//   lowerdir  read-only layers, TOP first (overlayfs's order): step 01's
//             Debian rootfs for step 07's demo, an image's layers in step 09
//   upperdir  this jail's private top: every write, every copy-up, every
//             deletion (a whiteout: a 0/0 character device) lands here
//   workdir   overlayfs's scratch space, on the upper's filesystem, empty
// The layers are never written: two jails on them share them and differ
// only in their uppers, and a jail's `rm -rf /bin` removes nothing below.
import { mount } from './libc.ts';

export interface OverlayRoot {
  /** The layer dirs, TOP first. */
  lower: string[];
  upper: string;
  work: string;
  /**
   * In a user namespace: the init is root of the jail's user namespace, not
   * of the host's, and may not touch trusted.* xattrs. overlayfs (Linux
   * 5.11+) then keeps its whiteout, opaque and origin marks in user.overlay.*
   * instead, and reads only those: a layer's opaque dir needs
   * user.overlay.opaque=y as well as trusted.overlay.opaque=y.
   */
  userxattr: boolean;
}

/**
 * The option string of `mount -t overlay`. Layer paths hold no ':' or ','
 * (step 09's store names them sha256-HEX). A renamed directory or a chmod
 * must land in the upper as a plain copy, which step 09's commit can turn
 * into a layer: so no redirect_dir and no metacopy (a kernel may default
 * them on; userxattr rules them out by itself).
 */
export function overlayOptions(o: OverlayRoot): string {
  return [`lowerdir=${o.lower.join(':')}`, `upperdir=${o.upper}`, `workdir=${o.work}`, ...(o.userxattr ? ['userxattr'] : ['redirect_dir=off', 'metacopy=off'])].join(',');
}

/** `mount -t overlay overlay -o OPTIONS TARGET`: a mount already, so pivot_root takes it as it is. */
export function mountOverlay(target: string, o: OverlayRoot): void {
  mount('overlay', target, 'overlay', 0, overlayOptions(o));
}

/** What `mount` prints for it: the twin a lesson shows. */
export const overlayTwin = (target: string, o: OverlayRoot): string => `mount -t overlay overlay -o ${overlayOptions(o)} ${target}`;
