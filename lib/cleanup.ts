// Every resource has one owner and one way back. Whatever creates something
// registers its undo on a CleanupStack in the same breath; success, errors
// and Ctrl-C all unwind the same stack, newest first.
import { warn } from './output.ts';

type Undo = { label: string; run: () => unknown | Promise<unknown> };

export class CleanupStack {
  #undos: Undo[] = [];
  #unwinding: Promise<void> | undefined;

  /** Registers how to undo something that was just made. */
  defer(label: string, run: () => unknown | Promise<unknown>): void {
    this.#undos.push({ label, run });
  }

  /** Undoes everything, newest first; one failing undo does not stop the rest. */
  unwind(): Promise<void> {
    this.#unwinding ??= (async () => {
      while (this.#undos.length) {
        const undo = this.#undos.pop()!;
        try {
          await undo.run();
        } catch (err) {
          warn(`could not undo "${undo.label}": ${(err as Error).message} (npm run clean removes leftovers)`);
        }
      }
      this.#unwinding = undefined;
    })();
    return this.#unwinding;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.unwind();
  }
}

/**
 * While `body` runs, SIGINT/SIGTERM/SIGHUP call `onSignal` instead of killing
 * Node outright, so that the stack can unwind. Returns body's result.
 */
export async function withSignals<T>(onSignal: (sig: NodeJS.Signals) => void, body: () => Promise<T>): Promise<T> {
  const sigs: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of sigs) process.on(s, onSignal);
  try {
    return await body();
  } finally {
    for (const s of sigs) process.off(s, onSignal);
  }
}
