// Step 09's init: PID 1 of a locked jail whose root is an overlay of an
// image's layers. Step 08's init (hardened-init.ts: the locks, in runc's
// order, around step 04's god process) with one thing changed: the root is
// mounted by mountOverlay instead of bound from a rootfs. Bundled by
// lib/bundle.mjs.
import { runHardenedInit } from '../08-hardening/hardened-init.ts';
import { mountOverlay, type LayeredSpec } from './overlay-mount.ts';

await runHardenedInit<LayeredSpec>(mountOverlay);
