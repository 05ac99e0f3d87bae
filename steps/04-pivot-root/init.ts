// The god process: PID 1 of the jail (the lesson's startContainer). It
// builds the prison from inside, then stays as a real init: it starts the
// target as its child, hands it the terminal, forwards signals, reaps every
// zombie, and exits with the target's status (god.ts). Bundled by lib/bundle.mjs.
import { readdirSync, rmdirSync } from 'node:fs';
import { loadLibc } from '../../lib/libc.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { escapeChroot } from '../02-chroot/escape.ts';
import { readSpec, waitForGo } from '../03-namespaces/handshake.ts';
import { buildPrison, superviseTarget } from './god.ts';

const spec = readSpec<JailSpec & { tryEscape?: boolean }>();
const go = waitForGo(spec.namespaces.includes('user')); // sends our PID: the launcher's part begins
loadLibc(); // koffi's addon loads meanwhile, not after "go"
// .then, not a top-level await: lib/bundle.mjs can then make this init one CommonJS script, quicker to start
void go.then(() => {
  buildPrison(spec);
  if (spec.tryEscape) {
    // step 02's escape, tried from inside the finished prison
    escapeChroot('/tmp/.escape');
    console.log(`after the escape attempt, / holds: ${readdirSync('/').sort().join(' ')}`);
    rmdirSync('/tmp/.escape');
    process.exit(0);
  }
  superviseTarget(spec);
});
