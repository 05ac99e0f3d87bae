// Every program the workshop starts is TypeScript, bundled ahead into one
// plain file with esbuild and cached by a stamp of its sources: no TypeScript
// loader and no module lookups at run time (but koffi, a native addon found
// through node_modules), so a start is as quick as plain `node`.
//  - a step's entry (npm run step N): bin/step.mjs runs it (runEntry);
//  - the jail's init: PID 1 inside the jail, where the repo may be unreadable
//    (user namespace) or gone (after pivot_root).
// Where its code allows (no top-level await, no import.meta but its url), a
// program is bundled as one CommonJS script, which Node starts without its
// ES module loader, and which can be compiled from V8's code cache
// (runEntry); else as an ES module.
// A bundle is rebuilt when any file it was made from changed (size or
// mtime). Plain JavaScript, so that bin/step.mjs can use it before any
// TypeScript is loaded; its types are in bundle.d.mts.
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Script } from 'node:vm';

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
 * call never loads the addon.
 * koffi's own loader spends ~6 ms of every start choosing its prebuilt
 * binary: package lookups, and a read of node's ELF header to tell glibc
 * from musl. The answer is the same at every start, so it is asked once,
 * when bundling (koffi is loaded here; the binary it chose is the
 * koffi.node in require's cache), and the bundle loads that binary itself
 * (~2 ms): its exports are koffi's API (koffi's JavaScript adds only
 * deprecated aliases). If koffi was reinstalled since (the file is gone,
 * or is another version), the bundle takes koffi's own way.
 */
const koffiFromRepo = {
  name: 'koffi-from-repo',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, () => ({ path: 'koffi', namespace: 'baj-koffi' }));
    b.onLoad({ filter: /.*/, namespace: 'baj-koffi' }, () => {
      const pkg = join(repo, 'package.json');
      let main = 'koffi';
      let binary = null;
      let version = null;
      try {
        const repoRequire = createRequire(pkg);
        main = repoRequire.resolve('koffi');
        version = repoRequire(main).version;
        binary = Object.keys(repoRequire.cache).find((f) => basename(f) === 'koffi.node') ?? null;
      } catch {}
      const [mainJs, binaryJs, versionJs] = [main, binary, version].map((v) => JSON.stringify(v));
      return {
        contents: `import { createRequire } from 'node:module';
          const repoRequire = createRequire(${JSON.stringify(pkg)});
          const direct = () => { try { const k = repoRequire(${binaryJs}); if (k.version === ${versionJs}) return k; } catch {} };
          const load = () => { try { return repoRequire(${mainJs}); } catch { return repoRequire('koffi'); } };
          let koffi;
          export default new Proxy({}, { get: (_, key) => (koffi ??= direct() ?? load())[key] });`,
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

// A bundle's stamp: a hash of the size and mtime of each repo file it was
// made from. esbuild names those files (its metafile); the build writes
// them, as it saw them, beside the bundle (NAME.inputs, the stamp on its
// first line), and a start stats only them (~25 files for a step; all of
// lib/ and steps/ took ~3 ms) and compares: no hashing unless one changed.
// A new import is an edit of a listed file, so it changes the stamp too; so
// does an edit of this file, which shapes every bundle. Each file is
// stat'ed once per process, and each entry's stamp taken once, shared with
// the copy of this file inside a step's bundle (bin/step.mjs loads both)
// through globalThis: a long-running process (step 10's daemon) keeps the
// code it first found.
const BUILDER = 'lib/bundle.mjs';
const seen = (globalThis.__bajStamps ??= { stats: new Map(), stamps: new Map() });

/** { size, mtimeMs } of a repo file, the first time it is asked for in this process; undefined if it is gone. */
function statOf(rel) {
  if (!seen.stats.has(rel)) {
    let s;
    try {
      s = statSync(join(repo, rel));
    } catch {}
    seen.stats.set(rel, s && { size: s.size, mtimeMs: s.mtimeMs });
  }
  return seen.stats.get(rel);
}

/** "path:size:mtime" lines of these repo files, or undefined if one is gone. */
function describe(files) {
  let text = '';
  for (const rel of files) {
    const s = statOf(rel);
    if (!s) return undefined;
    text += `${rel}:${s.size}:${s.mtimeMs}\n`;
  }
  return text;
}

/** The entry's stamp, from the inputs its last build listed; undefined if it was never built here. */
function stampOf(entry) {
  const key = bundleName(entry);
  if (!seen.stamps.has(key)) {
    const list = cached(`${key}.inputs`);
    let stamp;
    if (list) {
      const [built, ...lines] = readFileSync(list, 'utf8').split('\n');
      const now = describe(lines.filter(Boolean).map((l) => l.slice(0, l.indexOf(':'))));
      // as built: that stamp; else the stamp of what is there now, which an older build may have made
      if (now !== undefined) stamp = now === lines.join('\n') ? built : fnv12(now);
    }
    seen.stamps.set(key, stamp);
  }
  return seen.stamps.get(key);
}

/** The bundle's name: the step's directory and the entry, e.g. 04-pivot-root-init. */
export const bundleName = (entry) => `${basename(dirname(entry))}-${basename(entry).replace(/\.ts$/, '')}`;

/** Builds under way in this process, by entry and format: callers at the same moment (a daemon starting jails) share one. */
const building = new Map();
const once = (key, make) => {
  if (!building.has(key)) building.set(key, make().finally(() => building.delete(key)));
  return building.get(key);
};

/** A file of the cache by name: in the repo's cache, else in the user's own (or undefined). */
function cached(file) {
  if (existsSync(join(cacheDir, file))) return join(cacheDir, file);
  const own = join(writableCache(), file);
  return existsSync(own) ? own : undefined;
}

/** The cached file of this entry's current stamp with this suffix (.mjs, .cjs, …), or undefined. */
const current = (entry, suffix) => {
  const stamp = stampOf(entry);
  return stamp && cached(`${bundleName(entry)}-${stamp}${suffix}`);
};

/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point (an ES module). */
export async function bundled(entry) {
  return current(entry, '.mjs') ?? once(`${entry}.mjs`, () => build(entry, 'esm'));
}

/**
 * Node's arguments (after its own path) that start one of our scripts (a
 * jail's init, the idmap helper, a wocker shim): `flags`, and the script as
 * one CommonJS file where it can be one, which Node runs without its ES
 * module loader (~7 ms less on a slow machine); else its module bundle.
 */
export async function nodeArgs(entry, flags = []) {
  return [...flags, (await scriptOf(entry)) ?? (await bundled(entry))];
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

/**
 * Runs an entry point in this process (bin/step.mjs: a step's main): its
 * CommonJS script, compiled from V8's code cache (runScript), where it can
 * be one; else its module bundle, imported.
 */
export async function runEntry(entry) {
  const script = await scriptOf(entry);
  if (script) runScript(script);
  else await import(pathToFileURL(await bundled(entry)).href);
}

/**
 * The .cjs of the entry's current stamp, built if need be; undefined for an
 * entry that must stay a module (a top-level await): its module bundle is
 * built instead, and a marker of its stamp saves asking esbuild again.
 */
async function scriptOf(entry) {
  const found = current(entry, '.cjs');
  if (found || current(entry, '.noscript')) return found;
  return once(`${entry}.cjs`, async () => {
    try {
      return await build(entry, 'cjs');
    } catch {
      await bundled(entry); // esbuild's error left no list of inputs; this build makes one, and the stamp
      try {
        writeFileSync(join(writableCache(), `${bundleName(entry)}-${stampOf(entry)}.noscript`), '');
      } catch {}
      return undefined;
    }
  });
}

/**
 * V8 compiles each function of a script to bytecode the first time it runs,
 * ~4 ms of a launcher's start. V8's code cache is that bytecode, saved:
 * compiled from it, a script starts almost at once. It is taken as the
 * process exits, so it holds every function that run needed, and made again
 * whenever V8 rejects it (another source, another V8). (Node 22 does this
 * for every module: module.enableCompileCache().)
 */
function runScript(file) {
  const saved = cached(`${basename(file, '.cjs')}.v8cache`);
  const cachedData = saved ? readFileSync(saved) : undefined;
  // the wrapper Node's CommonJS loader puts around a file, on the same line: line numbers stay
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(file, 'utf8')}\n})`, { filename: file, cachedData });
  if (!cachedData || script.cachedDataRejected) {
    process.once('exit', () => {
      try {
        writeAtomically(join(writableCache(), `${basename(file, '.cjs')}.v8cache`), script.createCachedData());
      } catch {}
    });
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
}

/** A temp file renamed into place: a reader at the same moment sees the old file or the new, never half of one. */
function writeAtomically(path, data) {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * esbuild's bundle of `entry` ('esm' or 'cjs'), renamed into the cache by
 * the stamp of the files it read (which it also lists as NAME.inputs);
 * returns its path, or throws if esbuild failed (a top-level await, as
 * CommonJS). Koffi stays the repo's (koffiFromRepo); the bundle knows
 * where the repo is (globalThis.__bajRepo).
 */
async function build(entry, format) {
  const key = bundleName(entry);
  const dir = writableCache();
  const ext = format === 'cjs' ? '.cjs' : '.mjs';
  const tmp = join(dir, `${key}.${process.pid}.tmp${ext}`);
  // from the repo's node_modules, wherever this code runs from (a bundle of it may not be in the repo)
  const esbuild = createRequire(join(repo, 'package.json'))('esbuild');
  const started = Date.now();
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: repo, // the metafile names inputs relative to it
      metafile: true,
      bundle: true,
      platform: 'node',
      format,
      target: 'node20',
      external: ['esbuild'],
      plugins: [koffiFromRepo],
      outfile: tmp,
      logLevel: format === 'cjs' ? 'silent' : 'error',
      // CommonJS has no import.meta: import.meta.url is the script's own URL,
      // as in a module bundle (lib/sh.ts finds zx from it). ESM is given a
      // require(), which some bundled CommonJS packages call.
      ...(format === 'cjs' ? { define: { 'import.meta.url': '__bajUrl' } } : {}),
      banner: {
        js: `${format === 'cjs' ? `var __bajUrl = require('node:url').pathToFileURL(__filename).href;` : `import { createRequire as __bajRequire } from 'node:module'; const require = __bajRequire(import.meta.url);`} globalThis.__bajRepo = ${JSON.stringify(repo)};`,
      },
    });
    // any other import.meta (dirname, resolve) would be empty in CommonJS: such code stays a module
    if (format === 'cjs' && result.warnings.some((w) => w.text.includes('import.meta'))) throw new Error(`bundle: ${entry} uses import.meta`);
    // the repo's files only (node_modules is not watched, nor koffi's stand-in), and this builder
    const inputs = [...new Set([BUILDER, ...Object.keys(result.metafile.inputs).filter((f) => !f.includes(':') && !f.startsWith('node_modules/'))])].sort();
    const unseen = inputs.filter((rel) => !seen.stats.has(rel));
    // stats taken before the build stand: a file changed since then changes the next start's stamp
    const text = describe(inputs);
    if (text === undefined) throw new Error(`bundle: a source of ${entry} went away while it was built`);
    const stamp = fnv12(text);
    const out = join(dir, `${key}-${stamp}${ext}`);
    renameSync(tmp, out);
    // a file first stat'ed only now may have changed while esbuild read it (mtimes lag by a clock tick): then no list, and the next start builds again
    if (unseen.every((rel) => statOf(rel).mtimeMs < started - 20)) writeAtomically(join(dir, `${key}.inputs`), `${stamp}\n${text}`);
    seen.stamps.set(key, stamp);
    pruneStale(dir, key, stamp);
    return out;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Older bundles, scripts and code caches of the same entry are dead weight
 * once new ones exist; one younger than a few minutes may still be about to
 * start (a jail's init), so it stays until a later build. Those of this
 * stamp stay.
 */
function pruneStale(dir, key, stamp) {
  const pattern = new RegExp(`^${key}-([0-9a-f]{12})\\.(mjs|cjs|noscript|v8cache)$`);
  for (const f of readdirSync(dir)) {
    const old = pattern.exec(f)?.[1];
    if (!old || old === stamp) continue;
    try {
      if (Date.now() - statSync(join(dir, f)).mtimeMs > 10 * 60_000) rmSync(join(dir, f));
    } catch {}
  }
}
