// The god process: PID 1 of the jail (the lesson's startContainer). It
// builds the prison from inside, then stays as a real init: it starts the
// target as its child, hands it the terminal, forwards signals, reaps every
// zombie, and exits with the target's status. Bundled by lib/bundle.ts.
import { writeFileSync } from 'node:fs';
import { isatty } from 'node:tty';
import { blockSignals, clearCloexec, getpgrp, sethostname, shellStatus, spawn, SIGTTOU, SyscallError, tcgetpgrp, tcsetpgrp, waitpid, WNOHANG } from '../../lib/libc.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { envList, resolveCommand } from '../03-namespaces/exec.ts';
import { closeHandshake, die, readSpec, waitForGo } from '../03-namespaces/handshake.ts';
import { escapeChroot } from '../02-chroot/escape.ts';
import { bindIntoRootfs, bindRootfsOntoItself, makeMountsPrivate, mountDev, mountProc, mountSys, passDevice, pivotInto } from './prison.ts';

const spec = readSpec<JailSpec & { tryEscape?: boolean }>();
await waitForGo(spec.namespaces.includes('user'));
try {
  makeMountsPrivate();
  bindRootfsOntoItself(spec.rootfs);
  for (const b of spec.binds) bindIntoRootfs(spec.rootfs, b);
  mountProc(spec.rootfs);
  mountSys(spec.rootfs);
  mountDev(spec.rootfs);
  for (const dev of spec.devices ?? []) passDevice(spec.rootfs, dev);
  if (spec.hostname) sethostname(spec.hostname);
  pivotInto(spec.rootfs);
} catch (err) {
  die(err);
}

if (spec.tryEscape) {
  // step 02's escape, tried from inside the finished prison
  const { readdirSync, rmdirSync } = await import('node:fs');
  escapeChroot('/tmp/.escape');
  console.log(`after the escape attempt, / holds: ${readdirSync('/').sort().join(' ')}`);
  rmdirSync('/tmp/.escape');
  process.exit(0);
}

const path = resolveCommand(spec.command[0]!, spec.env.PATH ?? '/bin');
if (!path) {
  process.stderr.write(`jail: ${spec.command[0]}: command not found\n`);
  process.exit(127);
}
closeHandshake();
for (const fd of [0, 1, 2]) clearCloexec(fd); // Node may have marked them close-on-exec

let target = 0;
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
  // PID 1 has no default signal actions: without a handler, SIGTERM would do
  // nothing at all. Installed before the target exists: a signal sent the
  // moment it starts must not be lost. (Handlers run from the event loop, after
  // the synchronous spawn below has set `target`.)
  process.on(sig, () => {
    try {
      if (target > 0) process.kill(target, sig);
    } catch {}
  });
}

// The target gets its own process group; on a terminal that group becomes
// the foreground one, so Ctrl-C reaches the target (or the shell's job), not
// us and not the launcher. tcsetpgrp() from a background group raises
// SIGTTOU unless it is blocked.
const terminal = !spec.detached && isatty(0) && tcgetpgrp(0) === getpgrp();
blockSignals([SIGTTOU]);
// When the jail runs out of memory, the kernel's OOM killer picks its
// biggest process — and this Node init is often bigger than the workload.
// The target (and all it starts) inherits a score of 1000, "kill me first";
// we return to 0, which needs no privilege since we never went below it.
writeFileSync('/proc/self/oom_score_adj', '1000');
target = spawn(path, spec.command, envList(spec.env), spec.detached ? { newSession: true } : { newGroup: true });
writeFileSync('/proc/self/oom_score_adj', '0');
if (terminal) tcsetpgrp(0, target);

/** Orphans are re-parented to PID 1; reap them all, and notice when the target itself exits. */
function reap(): void {
  for (;;) {
    let pid: number;
    let raw: number;
    try {
      [pid, raw] = waitpid(-1, WNOHANG);
    } catch (err) {
      if (err instanceof SyscallError && err.code === 'ECHILD') return;
      throw err;
    }
    if (pid <= 0) return;
    if (pid === target) {
      if (terminal) tcsetpgrp(0, getpgrp()); // give the terminal back
      // leaving as PID 1 kills everything still in the namespace
      process.exit(shellStatus(raw));
    }
  }
}
process.on('SIGCHLD', reap);
setInterval(reap, 500); // belt and braces: SIGCHLDs coalesce, a missed one must not hang us
reap();
