// Step 10's init: step 09's (step 08's locked god process on an overlay
// root) with one thing added: it keeps its channel to the launcher and
// serves `exec` on it (exec-server.ts), as PID 1, the parent of everything
// in the jail. Bundled by lib/bundle.mjs, like every init.
import { runHardenedInit } from '../08-hardening/hardened-init.ts';
import { mountOverlay, type LayeredSpec } from '../09-layers/overlay-mount.ts';
import { serveExec } from './exec-server.ts';

await runHardenedInit<LayeredSpec>(mountOverlay, (spec) => ({ keepChannel: true, onReaped: serveExec(spec.env) }));
