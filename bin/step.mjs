// npm run step N [-- flags] [-- command args…]: runs steps/NN-*/main.ts.
// Plain JavaScript on purpose: it runs the step's bundle (lib/bundle.mjs),
// built once and rebuilt only when a source changed, so a start pays no
// TypeScript compilation; where the step allows, as one CommonJS script
// compiled from V8's code cache.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEntry } from '../lib/bundle.mjs';

const stepsDir = fileURLToPath(new URL('../steps/', import.meta.url));
const isStep = (d) => /^\d\d-/.test(d) && existsSync(join(stepsDir, d, 'main.ts'));
const [which, ...args] = process.argv.slice(2);
const n = which !== undefined && /^\d+$/.test(which) ? Number(which) : NaN;
// only the asked-for step is checked; the whole list is for the error
const dir = readdirSync(stepsDir).sort().find((d) => Number(d.slice(0, 2)) === n && isStep(d));
if (!dir) {
  const list = readdirSync(stepsDir).filter(isStep).sort().map((d) => `  ${Number(d.slice(0, 2))}  ${d.slice(3)}`).join('\n');
  process.stderr.write(`error: ${which === undefined ? 'which step? give its number' : `there is no step '${which}'`}\n  the steps are:\n${list}\n  e.g. npm run step 1\n`);
  process.exit(2);
}
const entry = join(stepsDir, dir, 'main.ts');
// the step sees its own flags in process.argv.slice(2), as if run directly
process.argv = [process.argv[0], entry, ...args];
await runEntry(entry);
