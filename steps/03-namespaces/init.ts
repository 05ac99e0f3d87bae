// Step 03's init: the first process in the new namespaces. It waits for the
// launcher, sets the hostname, gives a new PID namespace its own /proc,
// chroots (step 02) and then execs the target, which becomes PID 1 itself.
// Bundled by lib/bundle.mjs; never imported by host-side code.
import { join } from 'node:path';
import { chdir, chroot, mount, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, sethostname } from '../../lib/libc.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { closeHandshake, die, readSpec, sendToLauncher, waitForGo } from './handshake.ts';
import { execTarget } from './exec.ts';

const spec = readSpec<JailSpec>();
// .then, not a top-level await: lib/bundle.mjs can then make this init one CommonJS script, quicker to start
void waitForGo(spec.namespaces.includes('user')).then(() => {
  try {
    const has = (ns: string) => spec.namespaces.includes(ns as never);
    if (has('uts') && spec.hostname) sethostname(spec.hostname);
    if (has('mount')) {
      // unshare already made every mount private; say it here too: without it,
      // a mount below would propagate back into the host's namespace
      mount(null, '/', null, MS_REC | MS_PRIVATE);
      // a fresh /proc shows the new PID namespace; the host's would show the host's
      if (has('pid')) mount('proc', join(spec.rootfs, 'proc'), 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC);
    }
    chroot(spec.rootfs);
    chdir('/');
  } catch (err) {
    die(err);
  }
  execTarget(spec.command, spec.env, () => {
    sendToLauncher('running');
    closeHandshake(); // fd 3 must not leak into the target
  });
});
