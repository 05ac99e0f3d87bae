// npm run bench [-- ARGS…]: runs every bench/NN-*.ts in order, each in its
// own Node process, passing ARGS on (e.g. -- --runs 5). Exits non-zero if
// any of them failed.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const benches = readdirSync(here).filter((f) => /^\d.*\.ts$/.test(f)).sort();
const failed: string[] = [];
for (const file of benches) {
  console.log(`\n=== bench/${file}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, file), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) failed.push(`${file} (exit ${r.status ?? r.signal})`);
  if (r.signal === 'SIGINT') break;
}
if (failed.length) console.log(`\nfailed: ${failed.join(', ')}`);
process.exit(failed.length ? 1 : 0);
