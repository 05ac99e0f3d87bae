// npm run step N [-- flags] [-- command args…]: runs steps/NN-*/main.ts.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fail } from './output.ts';

const stepsDir = fileURLToPath(new URL('../steps/', import.meta.url));
const steps = readdirSync(stepsDir).filter((d) => /^\d\d-/.test(d) && existsSync(join(stepsDir, d, 'main.ts'))).sort();
const list = steps.map((d) => `  ${Number(d.slice(0, 2))}  ${d.slice(3)}`).join('\n');
const [which, ...args] = process.argv.slice(2);

const n = which !== undefined && /^\d+$/.test(which) ? Number(which) : NaN;
const dir = steps.find((d) => Number(d.slice(0, 2)) === n);
if (!dir) {
  fail(which === undefined ? 'which step? give its number' : `there is no step '${which}'`, `the steps are:\n${list}\n  e.g. npm run step 1`);
  process.exit(2);
}
process.argv = [process.argv[0]!, join(stepsDir, dir, 'main.ts'), ...args];
await import(pathToFileURL(join(stepsDir, dir, 'main.ts')).href);
