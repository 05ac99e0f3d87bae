// The `ip` command of iproute2, the tool a learner types too: every change is
// shown before it runs, and a failure names the command and its stderr. Reads
// (`ip -j`, JSON) are quiet: they change nothing.
import { showCommand } from '../../lib/output.ts';
import { $, run, shellQuote, succeeds } from '../../lib/sh.ts';

export const cleanHint = 'sudo npm run clean removes half-made network pieces; then try again';

export async function ip(...args: string[]): Promise<string> {
  showCommand(shellQuote(['ip', ...args]));
  return run(['ip', ...args], cleanHint);
}

/** nsenter -n enters only the jail's network namespace: the host's `ip` binary works on the jail's interfaces. */
export async function ipInJail(pid: number, ...args: string[]): Promise<string> {
  const argv = ['nsenter', '-t', String(pid), '-n', 'ip', ...args];
  showCommand(shellQuote(argv));
  return run(argv, cleanHint);
}

/** `ip -j ARGS` parsed; [] when there is nothing (e.g. no such device). */
export async function ipJson<T>(...args: string[]): Promise<T> {
  const out = await $`ip -j ${args}`.nothrow();
  return JSON.parse(out.exitCode === 0 && out.stdout.trim() ? out.stdout : '[]') as T;
}

export const linkExists = (name: string): Promise<boolean> => succeeds(['ip', 'link', 'show', 'dev', name]);

export async function deleteLink(name: string): Promise<void> {
  if (!(await linkExists(name))) return;
  try {
    await ip('link', 'del', name);
  } catch (err) {
    if (await linkExists(name)) throw err; // else the kernel beat us to it: a veth goes when its namespace dies
  }
}

