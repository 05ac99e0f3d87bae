// The god process's two jobs, as functions a later init can call in its own
// order (step 08 puts its locks between them):
//   buildPrison      inside the new namespaces: private mounts, the rootfs,
//                    /proc /sys /dev, the hostname, pivot_root;
//   superviseTarget  start the target as our child, hand it the terminal,
//                    forward signals, reap every zombie, exit with its status.
import { writeFileSync } from 'node:fs';
import { _exit, blockSignals, clearCloexec, cloexecFrom, getpgrp, isatty, linkUp, sethostname, shellStatus, spawn, SIGTTOU, SyscallError, tcgetpgrp, tcsetpgrp, waitpid, WNOHANG } from '../../lib/libc.ts';
import { mountOverlay } from '../../lib/overlay.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { envList, resolveCommand } from '../03-namespaces/exec.ts';
import { closeHandshake, die, sendToLauncher } from '../03-namespaces/handshake.ts';
import { bindIntoRootfs, bindRootfsOntoItself, makeMountsPrivate, mountDev, mountProc, mountSys, passDevice, pivotInto } from './prison.ts';

/** Builds the prison in runc's order; a failure is reported to the launcher (exit 125). */
export function buildPrison(spec: JailSpec): void {
  try {
    makeMountsPrivate();
    // pivot_root needs the root to be a mount: a bind of the rootfs, or (steps 07, 09) an overlay on it
    if (spec.overlay) mountOverlay(spec.rootfs, spec.overlay);
    else bindRootfsOntoItself(spec.rootfs);
    for (const b of spec.binds) bindIntoRootfs(spec.rootfs, b);
    mountProc(spec.rootfs);
    mountSys(spec.rootfs);
    mountDev(spec.rootfs);
    for (const dev of spec.devices ?? []) passDevice(spec.rootfs, dev);
    if (spec.hostname) sethostname(spec.hostname);
    if (spec.loopbackUp) linkUp('lo'); // step 05: even 127.0.0.1 answers only once lo is up
    pivotInto(spec.rootfs);
  } catch (err) {
    die(err);
  }
}

export interface SuperviseOptions {
  /** Keep the channel to the launcher open (close-on-exec) instead of closing it: step 10 runs exec requests through it. */
  keepChannel?: boolean;
  /** Every reaped child but the target, with its shell status (an exec'd command, an orphan). */
  onReaped?: (pid: number, status: number) => void;
}

/**
 * Starts the target and stays PID 1 until it exits. `beforeSpawn` runs in the
 * main thread just before the spawn, after which nothing of the init's own
 * setup needs a privilege: the place for locks that the target inherits.
 */
export function superviseTarget(spec: JailSpec, beforeSpawn?: () => void, opts: SuperviseOptions = {}): void {
  const path = resolveCommand(spec.command[0]!, spec.env.PATH ?? '/bin');
  if (!path) {
    process.stderr.write(`jail: ${spec.command[0]}: command not found\n`);
    process.exit(127);
  }
  for (const fd of [0, 1, 2]) clearCloexec(fd); // Node may have marked them close-on-exec
  cloexecFrom(3); // and nothing else we hold or inherited from the host reaches the target

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
  // then we return to 0. That needs no privilege as long as we hold the
  // capability we had when we raised it (CAP_SYS_RESOURCE, if any): a locked
  // init may have dropped it, and then stays at 1000 too, which is harmless.
  writeFileSync('/proc/self/oom_score_adj', '1000');
  try {
    beforeSpawn?.();
    target = spawn(path, spec.command, envList(spec.env), spec.detached ? { newSession: true } : { newGroup: true });
  } catch (err) {
    die(err);
  }
  // fd 3 is close-on-exec (cloexecFrom above): the target never had it
  sendToLauncher('running');
  if (!opts.keepChannel) closeHandshake();
  try {
    writeFileSync('/proc/self/oom_score_adj', '0');
  } catch {}
  if (terminal) {
    tcsetpgrp(0, target);
    // an interactive shell that looked before this line found itself in the
    // background and stopped itself (SIGTTIN); now that it is in front, wake it
    process.kill(-target, 'SIGCONT');
  }

  /** Orphans are re-parented to PID 1; reap them all, and notice when the target itself exits. */
  const reap = (): void => {
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
      if (pid !== target) opts.onReaped?.(pid, shellStatus(raw));
      if (pid === target) {
        if (terminal) tcsetpgrp(0, getpgrp()); // give the terminal back
        // Leaving as PID 1 kills everything still in the namespace. By
        // _exit(2), not process.exit(): Node's teardown would cost the jail's
        // end ~1.5 ms, for nothing the kernel does not do anyway. Nothing is
        // left to flush or put back: our writes to fd 3 are synchronous, this
        // path never opened Node's stdout or stderr streams (whose fd flags
        // Node restores at exit), and the launcher's Node puts the
        // terminal's modes back when it exits.
        _exit(shellStatus(raw));
      }
    }
  };
  // One SIGCHLD may stand for many exits (signals coalesce); the WNOHANG loop
  // drains them all. Reaping once right after the spawn catches a target that
  // was gone before the handler existed.
  process.on('SIGCHLD', reap);
  // Node's signal handlers do not keep its event loop alive; without this
  // timer the init would simply exit. It never fires in practice.
  setInterval(() => {}, 2 ** 30);
  reap();
}
