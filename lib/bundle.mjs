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
import { accessSync, constants, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Found from where this file is; a bundle (which may live outside the repo:
// a rootless user's own cache) is told at its top (globalThis.__bajRepo).
const repo = globalThis.__bajRepo ?? (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'steps')) || !existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('bundle: cannot find the build-a-jail checkout');
    dir = up;
  }
  return dir;
})();
/** Where bundles go: the repo's cache, or (for a user who may not write it: a rootless jail) one of the user's own. */
export const cacheDir = join(repo, 'node_modules', '.cache', 'build-a-jail');
const writableCache = () => {
  try {
    mkdirSync(cacheDir, { recursive: true });
    accessSync(cacheDir, constants.W_OK);
    return cacheDir;
  } catch {
    const own = join(tmpdir(), `build-a-jail-bundles-${process.getuid?.() ?? 'user'}`);
    mkdirSync(own, { recursive: true, mode: 0o700 });
    return own;
  }
};

/**
 * koffi is a native addon, found at run time through the repo's
 * node_modules, whatever directory the bundle itself is in: the bundle asks
 * the repo's own require() for it.
 */
const koffiFromRepo = {
  name: 'koffi-from-repo',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, () => ({ path: 'koffi', namespace: 'baj-koffi' }));
    b.onLoad({ filter: /.*/, namespace: 'baj-koffi' }, () => ({
      contents: `import { createRequire } from 'node:module'; export default createRequire(${JSON.stringify(join(repo, 'package.json'))})('koffi');`,
      loader: 'js',
    }));
  },
};

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

/** Builds under way in this process, by output path: callers at the same moment (a daemon starting jails) share one. */
const building = new Map();

/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point. */
export async function bundled(entry) {
  const name = `${bundleName(entry)}-${sourceStamp()}.mjs`;
  if (existsSync(join(cacheDir, name))) return join(cacheDir, name);
  const dir = writableCache();
  const out = join(dir, name);
  if (existsSync(out)) return out;
  if (!building.has(out)) building.set(out, buildInto(entry, dir, out).finally(() => building.delete(out)));
  return building.get(out);
}

async function buildInto(entry, dir, out) {
  const tmp = `${out}.${process.pid}.tmp.mjs`;
  // from the repo's node_modules, wherever this code runs from (a bundle of it may not be in the repo)
  const { build } = createRequire(join(repo, 'package.json'))('esbuild');
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['esbuild'],
    plugins: [koffiFromRepo],
    outfile: tmp,
    logLevel: 'error',
    // some bundled CommonJS packages call require(): give ESM one
    banner: { js: `import { createRequire as __bajRequire } from 'node:module'; const require = __bajRequire(import.meta.url); globalThis.__bajRepo = ${JSON.stringify(repo)};` },
  });
  renameSync(tmp, out);
  pruneStale(dir, bundleName(entry), out);
  return out;
}

/**
 * Older bundles of the same entry are dead weight once a new one exists; one
 * younger than a few minutes may still be about to start (a jail's init), so
 * it stays until a later build.
 */
function pruneStale(dir, name, keep) {
  const pattern = new RegExp(`^${name}-[0-9a-f]{12}\\.mjs$`);
  for (const f of readdirSync(dir)) {
    const path = join(dir, f);
    try {
      if (pattern.test(f) && path !== keep && Date.now() - statSync(path).mtimeMs > 10 * 60_000) rmSync(path);
    } catch {}
  }
}
