// Step 10's init: step 08's (the locked god process, here on step 09's
// overlay root) with one thing added: it keeps its channel to the launcher and
// serves `exec` on it (exec-server.ts), as PID 1, the parent of everything
// in the jail. Bundled by lib/bundle.mjs, like every init.
import { runHardenedInit } from '../08-hardening/hardened-init.ts';
import { serveExec } from './exec-server.ts';

// not awaited at the top level: lib/bundle.mjs can then make this init one CommonJS script, quicker to start
void runHardenedInit((spec) => ({ keepChannel: true, onReaped: serveExec(spec.env) }));
