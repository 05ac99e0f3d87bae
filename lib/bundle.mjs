// Every program the workshop starts is TypeScript, bundled ahead into one
// plain .mjs with esbuild and cached by a stamp of the sources: no TypeScript
// loader and no module lookups at run time (but koffi, a native addon found
// through node_modules), so a start is as quick as plain `node`.
//  - a step's entry (npm run step N): bin/step.mjs runs its bundle;
//  - the jail's init: PID 1 inside the jail, where the repo may be unreadable
//    (user namespace) or gone (after pivot_root). Where its code allows, a
//    script that a launcher starts (an init, a helper) is bundled as one
//    CommonJS file instead (nodeArgs), which Node starts without its ES
//    module loader.
// A bundle is rebuilt when any .ts under lib/ or steps/ changed (size or
// mtime). Plain JavaScript, so that bin/step.mjs can use it before any
// TypeScript is loaded; its types are in bundle.d.mts.
import { accessSync, constants, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
 * the repo's own require() for it, and only when first used (lib/libc.ts
 * binds its functions at their first call): a launcher that makes no libc
 * call never loads the addon. Its main file is looked up when bundling (at
 * run time, through koffi's package.json, that costs ~2 ms), and by name
 * again if koffi was reinstalled since.
 */
const koffiFromRepo = {
  name: 'koffi-from-repo',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, () => ({ path: 'koffi', namespace: 'baj-koffi' }));
    b.onLoad({ filter: /.*/, namespace: 'baj-koffi' }, () => {
      const pkg = join(repo, 'package.json');
      let main = 'koffi';
      try {
        main = createRequire(pkg).resolve('koffi');
      } catch {}
      return {
        contents: `import { createRequire } from 'node:module';
          const repoRequire = createRequire(${JSON.stringify(pkg)});
          const load = () => { try { return repoRequire(${JSON.stringify(main)}); } catch { return repoRequire('koffi'); } };
          let koffi;
          export default new Proxy({}, { get: (_, key) => (koffi ??= load())[key] });`,
        loader: 'js',
      };
    });
  },
};

/**
 * 48 bits of two 32-bit hashes (FNV-1a's step, and a murmur-style lane) of
 * the text's UTF-8, a 32-bit word at a time, as 12 hex digits: a cache key,
 * not a secret. Loading node:crypto for it would cost every start ~4 ms, and
 * a loop over single characters, still cold in V8, ~2 ms.
 */
function fnv12(text) {
  const buf = Buffer.alloc((Buffer.byteLength(text) + 3) & ~3); // alloc: never pooled, so 4-byte aligned
  buf.write(text);
  const words = new Int32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < words.length; i++) {
    a = Math.imul(a ^ words[i], 0x01000193);
    b = Math.imul(b ^ words[i], 0x5bd1e995);
    b ^= b >>> 15;
  }
  return ((a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0')).slice(0, 12);
}

// Once per process, and shared with the copy of this file inside a step's
// bundle (bin/step.mjs loads both): each file is stat'ed once per start. A
// walk of our own: readdirSync's { recursive } costs a start ~3 ms more.
function sourceStamp() {
  if (globalThis.__bajStamp) return globalThis.__bajStamp;
  let list = '';
  const walk = (dir, rel) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.isDirectory()) walk(`${dir}/${e.name}`, `${rel}${e.name}/`);
      else if (e.name.endsWith('.ts') || e.name.endsWith('.mjs')) {
        const s = statSync(`${dir}/${e.name}`);
        list += `${rel}${e.name}:${s.size}:${s.mtimeMs}\n`;
      }
    }
  };
  for (const dir of ['lib', 'steps']) walk(join(repo, dir), `${dir}/`);
  return (globalThis.__bajStamp = fnv12(list));
}

/** The bundle's name: the step's directory and the entry, e.g. 04-pivot-root-init. */
export const bundleName = (entry) => `${basename(dirname(entry))}-${basename(entry).replace(/\.ts$/, '')}`;

/** Builds under way in this process, by output path: callers at the same moment (a daemon starting jails) share one. */
const building = new Map();
const once = (out, make) => {
  if (!building.has(out)) building.set(out, make().finally(() => building.delete(out)));
  return building.get(out);
};

/** A file of the cache by name: in the repo's cache, else in the user's own (or undefined). */
function cached(file) {
  if (existsSync(join(cacheDir, file))) return join(cacheDir, file);
  const own = join(writableCache(), file);
  return existsSync(own) ? own : undefined;
}

/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point. */
export async function bundled(entry) {
  const name = `${bundleName(entry)}-${sourceStamp()}`;
  const found = cached(`${name}.mjs`);
  if (found) return found;
  const out = join(writableCache(), `${name}.mjs`);
  return once(out, async () => {
    // some bundled CommonJS packages call require(): give ESM one
    await esbuildInto(entry, out, 'esm', `import { createRequire as __bajRequire } from 'node:module'; const require = __bajRequire(import.meta.url);`);
    return out;
  });
}

/**
 * Node's arguments (after its own path) that start one of our scripts (a
 * jail's init, the idmap helper, a wocker shim): `flags`, and the script as
 * one CommonJS file where it can be one (no top-level await, no
 * import.meta), which Node runs without its ES module loader (~7 ms less on
 * a slow machine); else its bundle, which is then the only one built.
 */
export async function nodeArgs(entry, flags = []) {
  const script = await scriptOf(entry).catch(() => undefined);
  return [...flags, script ?? (await bundled(entry))];
}

/**
 * The environment for a Node child of ours that makes no TLS connection (a
 * jail's init, a wocker shim, the idmap helper): without
 * NODE_EXTRA_CA_CERTS, a file of certificates that every Node would parse
 * as it starts (~45 ms on a slow CPU).
 */
export function nodeChildEnv(env = process.env) {
  const { NODE_EXTRA_CA_CERTS: _, ...rest } = env;
  return rest;
}

/** The .cjs beside the bundle, or undefined; an entry that cannot be one gets a marker, so it is tried once per stamp. */
async function scriptOf(entry) {
  const name = `${bundleName(entry)}-${sourceStamp()}`;
  const found = cached(`${name}.cjs`);
  if (found) return found;
  if (cached(`${name}.noscript`)) return undefined;
  const dir = writableCache();
  const out = join(dir, `${name}.cjs`);
  return once(out, async () => {
    try {
      // import.meta is empty in CommonJS: code that uses it has to stay a module
      const warnings = await esbuildInto(entry, out, 'cjs', '', (w) => w.text.includes('import.meta'));
      if (warnings) throw new Error('uses import.meta');
      return out;
    } catch {
      try {
        writeFileSync(join(dir, `${name}.noscript`), '');
      } catch {}
      return undefined;
    }
  });
}

/**
 * esbuild's one bundle of `entry`, written to a temp file and renamed to
 * `out` only if it succeeded and `refuse` (given esbuild's warnings) says
 * nothing against it; returns whether it refused. Koffi stays the repo's
 * (koffiFromRepo); the bundle knows where the repo is (globalThis.__bajRepo).
 */
async function esbuildInto(entry, out, format, banner, refuse = () => false) {
  const tmp = `${out}.${process.pid}.tmp.${format === 'cjs' ? 'cjs' : 'mjs'}`;
  // from the repo's node_modules, wherever this code runs from (a bundle of it may not be in the repo)
  const { build } = createRequire(join(repo, 'package.json'))('esbuild');
  try {
    const result = await build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      format,
      target: 'node20',
      external: ['esbuild'],
      plugins: [koffiFromRepo],
      outfile: tmp,
      logLevel: format === 'cjs' ? 'silent' : 'error',
      banner: { js: `${banner} globalThis.__bajRepo = ${JSON.stringify(repo)};` },
    });
    if (result.warnings.some(refuse)) return true;
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
  pruneStale(dirname(out), entry);
  return false;
}

/**
 * Older bundles and scripts of the same entry are dead weight once new ones
 * exist; one younger than a few minutes may still be about to start (a
 * jail's init), so it stays until a later build. Those of this stamp stay.
 */
function pruneStale(dir, entry) {
  const pattern = new RegExp(`^${bundleName(entry)}-([0-9a-f]{12})\\.(mjs|cjs|noscript)$`);
  for (const f of readdirSync(dir)) {
    const stamp = pattern.exec(f)?.[1];
    if (!stamp || stamp === sourceStamp()) continue;
    try {
      if (Date.now() - statSync(join(dir, f)).mtimeMs > 10 * 60_000) rmSync(join(dir, f));
    } catch {}
  }
}
