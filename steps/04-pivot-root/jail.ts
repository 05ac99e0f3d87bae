// Step 04's jail as data: every namespace of the lesson's clone() call (the
// user namespace only on request, see the lesson), pivot_root, /proc /sys
// /dev, and this step's init as PID 1. Later steps start from this spec.
import { defaultCommand, type FlagSpecs } from '../../lib/cli.ts';
import { repoPath } from '../../lib/paths.ts';
import { jailEnv, type JailSpec } from '../../lib/spec.ts';
import { PREFIX } from '../../lib/state.ts';
import { ALL_NAMESPACES } from '../03-namespaces/namespaces.ts';

/** The god process's TypeScript entry; the launcher bundles it. */
export const initPath = repoPath('steps/04-pivot-root/init.ts');

/** Step 04's own flags, beside jailFlags (--rootfs, --hostname). */
export const pivotFlags = {
  debian: { type: 'boolean', help: 'use the Debian rootfs of step 1 (--debian)' },
  user: { type: 'boolean', help: 'add a user namespace: root inside is an unprivileged uid outside (from /etc/subuid, or a free range)' },
  'try-escape': { type: 'boolean', help: "let PID 1 try step 02's escape after pivot_root, and show where it lands" },
} as const satisfies FlagSpecs;

export function pivotSpec(rootfs: string, hostname: string | undefined, user: boolean, command: string[]): JailSpec {
  return {
    name: `${PREFIX}-${process.pid}`,
    rootfs,
    hostname,
    namespaces: ALL_NAMESPACES.filter((n) => n !== 'user' || user),
    command: command.length ? command : defaultCommand,
    env: jailEnv({ HOSTNAME: hostname ?? 'jail' }),
    pivot: true,
    binds: [],
  };
}
