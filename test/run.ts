// npm test [-- N …]: runs each step's test file in its own Node process (a
// crash in one cannot hide another's results), then prints one plain line:
// "N passed, N failed, N skipped". Exit status is non-zero on any failure.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const wanted = process.argv.slice(2).map((a) => a.replace(/^0+/, ''));
const files = readdirSync(here)
  .filter((f) => /^\d\d-.*\.test\.ts$/.test(f))
  .filter((f) => wanted.length === 0 || wanted.includes(f.slice(0, 2).replace(/^0+/, '')))
  .sort();
// the VM harness's own unit tests (no VM is booted) run with the whole suite
if (wanted.length === 0) files.push('vm/harness.test.ts');

if (files.length === 0) {
  console.error(`no test file matches ${wanted.join(' ')}; the steps are ${readdirSync(here).filter((f) => f.endsWith('.test.ts')).map((f) => f.slice(0, 2)).join(' ')}`);
  process.exit(2);
}

let passed = 0;
let failed = 0;
let skipped = 0;

/**
 * No test file may hang CI: past its time limit it is killed, with every
 * process it started (its own process group), and counted as one failure.
 * JAIL_TEST_FILE_TIMEOUT (seconds) overrides the default, which is longer in
 * npm run test:vm's emulated VM (JAIL_VM=1), where everything is ~10x slower.
 */
const limitMs = Number(process.env.JAIL_TEST_FILE_TIMEOUT ?? (process.env.JAIL_VM === '1' ? 2400 : 900)) * 1000;

for (const file of files) {
  const out = await new Promise<{ code: number; text: string; hung: boolean }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(here, file), '-c=false'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    let text = '';
    let hung = false;
    child.stdout.on('data', (d) => {
      text += d;
      process.stdout.write(d);
    });
    const timer = setTimeout(() => {
      hung = true;
      try {
        process.kill(-child.pid!, 'SIGTERM'); // the launchers unwind their jails on SIGTERM
        setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {}
        }, 5000).unref();
      } catch {}
    }, limitMs);
    // Ctrl-C of npm test reaches us, not the detached group: pass it on
    const stop = () => {
      try {
        process.kill(-child.pid!, 'SIGINT');
      } catch {}
    };
    process.on('SIGINT', stop);
    child.on('close', (code) => {
      clearTimeout(timer);
      process.off('SIGINT', stop);
      resolve({ code: code ?? 1, text, hung });
    });
  });
  if (out.hung) {
    console.log(`${file}: FAILED: still running after ${limitMs / 1000} s, killed (JAIL_TEST_FILE_TIMEOUT sets the limit)`);
    failed += 1;
    continue;
  }
  const num = (label: string) => Number(out.text.match(new RegExp(`${label}:\\s+(\\d+)`))?.[1] ?? NaN);
  const total = num('Total');
  if (Number.isNaN(total)) {
    console.log(`${file}: crashed before reporting (exit ${out.code})`);
    failed += 1;
    continue;
  }
  const p = num('Passed');
  const s = num('Skipped');
  passed += p;
  skipped += s;
  failed += total - p; // uvu's Total leaves skipped tests out
  if (out.code !== 0 && total - p === 0) failed += 1; // a crash after the summary
}

console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
