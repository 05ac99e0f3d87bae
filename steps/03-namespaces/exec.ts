// Handing the process over to the target program with execve(2): the same
// PID, the target's code. What the old program leaves behind must be undone
// first, or the target inherits it.
import { accessSync, constants } from 'node:fs';
import { clearCloexec, cloexecFrom, execve, resetToDefault, SIGPIPE, SIGXFSZ, unblockAllSignals } from '../../lib/libc.ts';

/** execvp's PATH search, done by hand: inside the jail, with the jail's PATH. */
export function resolveCommand(name: string, path: string): string | undefined {
  const candidates = name.includes('/') ? [name] : path.split(':').map((d) => `${d}/${name}`);
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

export const envList = (env: Record<string, string>): string[] => Object.entries(env).map(([k, v]) => `${k}=${v}`);

/**
 * Becomes the target. Exits 127, as a shell would, if it cannot be found;
 * `found` runs once it is, just before the exec (the handshake's "running").
 */
export function execTarget(argv: string[], env: Record<string, string>, found: () => void = () => {}): never {
  const path = resolveCommand(argv[0]!, env.PATH ?? '/bin');
  if (!path) {
    process.stderr.write(`jail: ${argv[0]}: command not found\n`);
    process.exit(127);
  }
  found();
  for (const fd of [0, 1, 2]) clearCloexec(fd); // Node may mark them close-on-exec
  cloexecFrom(3); // nothing else of ours, or inherited from the host, crosses the exec
  resetToDefault(SIGPIPE); // Node ignores SIGPIPE, and ignored stays ignored across exec
  resetToDefault(SIGXFSZ);
  unblockAllSignals();
  execve(path, argv, envList(env));
}
