// Step 08's init: PID 1 of the locked jail. Step 04's god process with the
// locks between its two halves; the whole order, and why, is in
// hardened-init.ts. The root is step 04's: a bind of the rootfs onto itself,
// or the overlay spec.overlay names (step 08 --ssh, step 09), made usable
// for a user namespace's root by the launcher (userns.ts, overlay-userns.ts).
// Bundled by lib/bundle.mjs.
import { runHardenedInit } from './hardened-init.ts';

// not awaited at the top level: lib/bundle.mjs can then make this init one CommonJS script, quicker to start
void runHardenedInit();
