// npm run doctor: is this machine ready for the workshop?
import { allChecks } from '../lib/preflight.ts';
import { colour as c } from '../lib/output.ts';
import { runMain } from '../lib/errors.ts';

await runMain(async () => {
  const checks = allChecks();
  for (const check of checks) {
    const mark = check.ok ? c.green('ok  ') : c.red('MISS');
    const detail = check.detail ? c.dim(` (${check.detail})`) : '';
    console.log(`${mark} ${check.name}${detail}`);
    if (!check.ok) console.log(`     ${c.yellow('fix:')} ${check.fix}`);
  }
  const missing = checks.filter((c) => !c.ok).length;
  console.log(missing ? `\n${missing} thing(s) to fix.` : '\nAll set: this machine can build every jail in the workshop.');
  return missing ? 1 : 0;
});
