// Host tools through zx. Quiet by default: the learner is shown the command
// with showCommand() before it runs, and its output only when it matters.
// zx costs ~60 ms to load, more than a jail's whole start: it is loaded on
// the first command, not at import, so a step that runs none never pays.
import { createRequire } from 'node:module';
import type { Shell } from 'zx';
import { JailError } from './errors.ts';

type Zx = typeof import('zx');
let zx: Zx | undefined;
let shell: Shell | undefined;
// require (not import): synchronous, so `$` can stay a plain tagged template
const loadZx = (): Zx => (zx ??= createRequire(import.meta.url)('zx') as Zx);

// zx quotes arguments with bash's $'…'; keep bash as the shell. Its stdin is
// /dev/null, not zx's default pipe: Node's pipes are socketpairs, and a bash
// whose stdin is a socket (and whose SHLVL is unset, as under sudo) takes
// itself for sshd's child and reads root's ~/.bashrc on every command.
export const $ = ((pieces: TemplateStringsArray, ...args: unknown[]) => {
  shell ??= loadZx().$({ quiet: true, verbose: false, shell: '/bin/bash', stdio: ['ignore', 'pipe', 'pipe'] });
  return shell!(pieces, ...(args as never[]));
}) as Shell;

/** Runs a command; on failure throws a JailError that names it and shows its stderr. */
export async function run(args: string[], hint?: string): Promise<string> {
  try {
    const out = await $`${args}`;
    return out.stdout;
  } catch (err) {
    if (err instanceof loadZx().ProcessOutput) {
      const msg = err.stderr.trim().split('\n').slice(-3).join(' / ') || `exit status ${err.exitCode}`;
      throw new JailError(`\`${args.join(' ')}\` failed: ${msg}`, hint);
    }
    throw err;
  }
}

/** Runs a command and reports only whether it succeeded. */
export async function succeeds(args: string[]): Promise<boolean> {
  const out = await $`${args}`.nothrow();
  return out.exitCode === 0;
}

/** Quotes one word for the shell (display, or a script we write): pasteable as is. */
export const shq = (word: string): string => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

/** Quotes argv for display, so a learner can paste it into a shell as is. */
export function shellQuote(args: string[]): string {
  return args.map(shq).join(' ');
}
