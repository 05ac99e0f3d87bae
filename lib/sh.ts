// Host tools through zx. Quiet by default: the learner is shown the command
// with showCommand() before it runs, and its output only when it matters.
import { $ as zx$, ProcessOutput } from 'zx';
import { JailError } from './errors.ts';

// zx quotes arguments with bash's $'…'; keep bash as the shell.
export const $ = zx$({ quiet: true, verbose: false, shell: '/bin/bash' });

/** Runs a command; on failure throws a JailError that names it and shows its stderr. */
export async function run(args: string[], hint?: string): Promise<string> {
  try {
    const out = await $`${args}`;
    return out.stdout;
  } catch (err) {
    if (err instanceof ProcessOutput) {
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
