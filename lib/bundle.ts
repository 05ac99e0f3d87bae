// The init runs as PID 1 inside the jail, where the repo may be unreadable
// (user namespace) or gone (after pivot_root). So it is bundled ahead into
// one plain .mjs with esbuild: no TypeScript loader, no module lookups at run
// time but koffi (a native addon, found through node_modules), and a start-up
// as quick as plain `node`. Rebuilt only when a source file changed.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDir } from './state.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const outDir = join(repo, 'node_modules', '.cache', 'build-a-jail');

function sourceStamp(): string {
  const h = createHash('sha256');
  for (const dir of ['lib', 'steps']) {
    for (const f of readdirSync(join(repo, dir), { recursive: true }) as string[]) {
      if (!f.endsWith('.ts')) continue;
      const s = statSync(join(repo, dir, f));
      h.update(`${f}:${s.size}:${s.mtimeMs}\n`);
    }
  }
  return h.digest('hex').slice(0, 12);
}

/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point. */
export async function bundled(entry: string, name: string): Promise<string> {
  const out = join(outDir, `${name}-${sourceStamp()}.mjs`);
  if (existsSync(out)) return out;
  ensureDir(outDir);
  const tmp = `${out}.${process.pid}.tmp.mjs`;
  await build({ entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', target: 'node20', external: ['koffi'], outfile: tmp, logLevel: 'error' });
  const { renameSync } = await import('node:fs');
  renameSync(tmp, out);
  return out;
}
