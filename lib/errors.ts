// One error class for everything a learner can cause or fix: a sentence that
// says what went wrong, and a hint that says what to do about it.
import { fail } from './output.ts';

export class JailError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'JailError';
  }
}

/**
 * Runs an entry point: its resolved number is the process's exit status; a
 * JailError becomes one clear sentence (and a hint) instead of a stack trace.
 */
export async function runMain(main: () => Promise<number | void>): Promise<never> {
  let code: number;
  try {
    code = (await main()) ?? 0;
  } catch (err) {
    if (err instanceof JailError) {
      fail(err.message, err.hint);
      code = err.exitCode;
    } else {
      const e = err as Error;
      fail(e?.message ?? String(err), 'this looks like a bug in the workshop; run with DEBUG=1 for the stack trace');
      if (process.env.DEBUG) console.error(e?.stack);
      code = 70; // EX_SOFTWARE
    }
  }
  // Let stdout/stderr drain before leaving.
  process.exitCode = code;
  await new Promise((r) => setImmediate(r));
  process.exit(code);
}

/** Turns a child's wait status into the shell convention: code, or 128+signal. */
export function statusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  if (signal) return 128 + (signalNumber(signal) ?? 0);
  return 1;
}

import { constants } from 'node:os';
export function signalNumber(name: string): number | undefined {
  return (constants.signals as Record<string, number>)[name];
}
