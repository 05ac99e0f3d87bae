// Step 07's root: step 01's Debian rootfs as the read-only lower of an
// overlay, under a private top that lives as long as the jail. What sshd
// needs (our key, its config, the start script) is written into that top
// before the jail starts; what the jail writes (its host keys, a learner's
// `rm -rf /bin`) lands there too, and goes with it. Nothing is copied, and
// the Debian tree every later step uses is never written. PID 1 mounts the
// overlay in the jail's mount namespace (lib/overlay.ts; step 09 makes
// images of such layers):
//   $JAIL_HOME/ssh-demo/upper   the jail's writes, copy-ups and whiteouts
//   $JAIL_HOME/ssh-demo/work    overlayfs's scratch space
//   $JAIL_HOME/ssh-demo/merged  the mount point: the jail's /
import { chmodSync, existsSync, lchownSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { overlayTwin, type OverlayRoot } from '../../lib/overlay.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import type { JailHook } from '../../lib/spec.ts';
import { jailHome } from '../../lib/state.ts';

/** The demo's own dir; one demo runs at a time (its pid file says which). */
export const demoDir = (): string => join(jailHome(), 'ssh-demo');

export interface DemoRoot {
  lower: string;
  dir: string;
  upper: string;
  work: string;
  merged: string;
}

export function demoRoot(lower: string): DemoRoot {
  const dir = demoDir();
  return { lower, dir, upper: join(dir, 'upper'), work: join(dir, 'work'), merged: join(dir, 'merged') };
}

/** What PID 1 mounts; userxattr with a user namespace (step 08's --ssh). */
export const overlayOf = (r: DemoRoot, userxattr = false): OverlayRoot => ({ lower: [r.lower], upper: r.upper, work: r.work, userxattr });

/**
 * mkdir -p REL in the upper, each dir with the owner and mode of the same
 * dir in the lower: a dir that exists in both is merged, and the upper's
 * attributes win (root's 0700 /root must stay 0700, or sshd refuses the key).
 */
export function mkdirsLikeLower(r: DemoRoot, rel: string): string {
  const parts = rel.split('/').filter(Boolean);
  let path = r.upper;
  let below = r.lower;
  for (const part of parts) {
    path = join(path, part);
    below = join(below, part);
    if (existsSync(path)) continue;
    const s = existsSync(below) ? statSync(below) : undefined;
    mkdirSync(path);
    // mkdir's mode passes through the umask; chmod's does not
    chmodSync(path, s ? s.mode & 0o7777 : 0o755);
    if (s) lchownSync(path, s.uid, s.gid);
  }
  return path;
}

/**
 * The root hook: a fresh top for each start (left over from a killed
 * launcher, the old one goes first: no demo runs, or the caller said so),
 * `fill` writes sshd's pieces into it, and its removal is registered at once.
 */
export function demoRootHook(r: DemoRoot, fill: (r: DemoRoot) => Promise<void>): JailHook {
  return {
    name: 'ssh-demo-root',
    async prepare(spec, cleanup) {
      heading(`The root: an overlay of ${r.lower}, under a top of this jail's own`);
      rmSync(r.dir, { recursive: true, force: true });
      mkdirSync(dirname(r.dir), { recursive: true });
      // 0700: the upper holds whatever the jail writes, setuid files included; no host user may reach it
      mkdirSync(r.dir, { mode: 0o700 });
      cleanup.defer(`the ssh demo's top, ${r.dir}`, () => rmSync(r.dir, { recursive: true, force: true }));
      for (const d of [r.upper, r.work, r.merged]) mkdirSync(d, { mode: 0o755 });
      showCommand(`mkdir -p ${r.upper} ${r.work} ${r.merged}`);
      explain(`lower: ${r.lower}   read-only: step 01's tree, which no jail writes`);
      explain(`upper: ${r.upper}   this jail's writes (host keys, your files, whiteouts of what you delete); removed when it ends`);
      await fill(r);
      showCommand(`${overlayTwin(r.merged, spec.overlay ?? overlayOf(r))}   # by PID 1, in the jail's mount namespace`);
    },
  };
}

/** npm run clean: the top of a demo whose launcher is gone (SIGKILLed: its cleanup never ran). */
export function cleanDemoRoot(running: boolean): string[] {
  const dir = demoDir();
  if (running || !existsSync(dir)) return [];
  rmSync(dir, { recursive: true, force: true });
  return [`removed the ssh demo's top, ${dir} (its launcher is gone)`];
}
