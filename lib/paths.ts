// Where the repository is. A step's code runs either from its TypeScript
// source or from a bundle in node_modules/.cache, so a path relative to
// import.meta.url would differ between the two; the repo root does not.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepo(): string {
  // a bundle says where it was made from: it may run from outside the repo
  const told = (globalThis as { __bajRepo?: string }).__bajRepo;
  if (told) return told;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'build-a-jail') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the build-a-jail checkout above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

let repo: string | undefined;

/** The checkout's root directory (where package.json is). */
export const repoRoot = (): string => (repo ??= findRepo());

/** A path inside the checkout, e.g. repoPath('steps/04-pivot-root/init.ts'). */
export const repoPath = (...parts: string[]): string => join(repoRoot(), ...parts);
