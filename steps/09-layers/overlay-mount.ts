// Step 09, inside the jail: the root is an overlay. PID 1 mounts it in the
// jail's own mount namespace, where it stays invisible to the host and goes
// away with the jail, the text's AUFS in today's kernel:
//   lowerdir  the image's layers, read-only, TOP first (overlayfs's order)
//   upperdir  this jail's private top: every write, every copy-up, every
//             deletion (a whiteout: a 0/0 character device) lands here
//   workdir   overlayfs's scratch space, on the upper's filesystem, empty
// The layers are never written: two jails on one image share them and
// differ only in their uppers.
import { mount } from '../../lib/libc.ts';
import type { HardenedSpec } from '../08-hardening/jail.ts';

export interface OverlayRoot {
  /** The image's layer dirs, TOP first. */
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

export type LayeredSpec = HardenedSpec & { overlay: OverlayRoot };

/**
 * The option string of `mount -t overlay`. Layer paths hold no ':' or ','
 * (store.ts names them sha256-HEX). A renamed directory or a chmod must land
 * in the upper as a plain copy, which commit can turn into a layer: so no
 * redirect_dir and no metacopy (a kernel may default them on; userxattr
 * rules them out by itself).
 */
export function overlayOptions(o: OverlayRoot): string {
  return [`lowerdir=${o.lower.join(':')}`, `upperdir=${o.upper}`, `workdir=${o.work}`, ...(o.userxattr ? ['userxattr'] : ['redirect_dir=off', 'metacopy=off'])].join(',');
}

/**
 * step 04's mountRoot, for buildPrison: the overlay instead of a bind of
 * the rootfs. A mount already, so pivot_root takes it as it is; buildPrison
 * then mounts /proc /sys /dev on top of the merged tree as usual.
 */
export function mountOverlay(spec: LayeredSpec): void {
  mount('overlay', spec.rootfs, 'overlay', 0, overlayOptions(spec.overlay));
}
