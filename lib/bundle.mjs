// Every program the workshop starts is TypeScript, bundled ahead into one
// plain .mjs with esbuild and cached by a stamp of the sources: no TypeScript
// loader and no module lookups at run time (but koffi, a native addon found
// through node_modules), so a start is as quick as plain `node`.
//  - a step's entry (npm run step N): bin/step.mjs runs its bundle;
//  - the jail's init: PID 1 inside the jail, where the repo may be unreadable
//    (user namespace) or gone (after pivot_root).
// A bundle is rebuilt when any .ts under lib/ or steps/ changed (size or
// mtime). Plain JavaScript, so that bin/step.mjs can use it before any
// TypeScript is loaded; its types are in bundle.d.mts.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// lib/bundle.mjs itself is never bundled (the launcher imports it from source
// or from a bundle made of it): so the repo is found from a known anchor
const repo = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'steps')) || !existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('bundle: cannot find the build-a-jail checkout');
    dir = up;
  }
  return dir;
})();
export const cacheDir = join(repo, 'node_modules', '.cache', 'build-a-jail');

let stamp;
function sourceStamp() {
  if (stamp) return stamp;
  const h = createHash('sha256');
  for (const dir of ['lib', 'steps']) {
    for (const f of readdirSync(join(repo, dir), { recursive: true }).sort()) {
      if (!f.endsWith('.ts') && !f.endsWith('.mjs')) continue;
      const s = statSync(join(repo, dir, f));
      h.update(`${f}:${s.size}:${s.mtimeMs}\n`);
    }
  }
  return (stamp = h.digest('hex').slice(0, 12));
}

/** The bundle's name: the step's directory and the entry, e.g. 04-pivot-root-init. */
export const bundleName = (entry) => `${basename(dirname(entry))}-${basename(entry).replace(/\.ts$/, '')}`;

/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point. */
export async function bundled(entry) {
  const out = join(cacheDir, `${bundleName(entry)}-${sourceStamp()}.mjs`);
  if (existsSync(out)) return out;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp.mjs`;
  const { build } = await import('esbuild');
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['koffi', 'esbuild'],
    outfile: tmp,
    logLevel: 'error',
    // some bundled CommonJS packages call require(): give ESM one
    banner: { js: "import { createRequire as __bajRequire } from 'node:module'; const require = __bajRequire(import.meta.url);" },
  });
  renameSync(tmp, out);
  pruneStale(bundleName(entry), out);
  return out;
}

/**
 * Older bundles of the same entry are dead weight once a new one exists; one
 * younger than a few minutes may still be about to start (a jail's init), so
 * it stays until a later build.
 */
function pruneStale(name, keep) {
  const pattern = new RegExp(`^${name}-[0-9a-f]{12}\\.mjs$`);
  for (const f of readdirSync(cacheDir)) {
    const path = join(cacheDir, f);
    try {
      if (pattern.test(f) && path !== keep && Date.now() - statSync(path).mtimeMs > 10 * 60_000) rmSync(path);
    } catch {}
  }
}
