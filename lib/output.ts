// What a learner sees: plain words for what is happening, the equivalent shell
// command, then the result. Everything goes to stderr so that a jail's own
// stdout stays clean for pipes and tests. Colour only on a terminal (chalk
// decides from the stream; FORCE_COLOR / NO_COLOR are honoured).
import { isatty } from 'node:tty';
import chalk, { Chalk } from 'chalk';

// isatty(2), not process.stderr.isTTY: that would make Node's stderr stream at every start, quiet or not
const c = isatty(2) ? chalk : new Chalk({ level: 0 });
const quiet = () => process.env.JAIL_QUIET === '1';

function write(line: string): void {
  if (!quiet()) process.stderr.write(line + '\n');
}

/** A section title: what this step is about to do. */
export function heading(text: string): void {
  write('\n' + c.bold.magenta('▶ ' + text));
}

/** A sentence of explanation. */
export function explain(text: string): void {
  write(c.white('  ' + text));
}

/** The shell command a learner could type to do the same thing by hand. */
export function showCommand(command: string): void {
  write(c.cyan('  $ ' + command));
}

export function ok(text: string): void {
  write(c.green('  ✔ ' + text));
}

export function warn(text: string): void {
  write(c.yellow('  ! ' + text));
}

/** Always printed, even when quiet: errors must never be silent. */
export function fail(text: string, hint?: string): void {
  process.stderr.write(c.red.bold('error: ') + text + '\n');
  if (hint) process.stderr.write(c.yellow('  hint: ') + hint + '\n');
}

export const colour = c;
