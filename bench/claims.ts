// npm run claims [-- --only NAME… --markdown --svg FILE]
// The lesson text's claims, each checked on this machine: one check per claim
// (bench/claims-*.ts), run one after another, then one table — the claim in the
// text's own words and in English, the verdict (shown / corrected / wrong), the
// measured figure, and the lesson that proves it. A verdict of "wrong" is a
// finding, not a failure: the exit status is 0 when every check ran, 1 when one
// could not, 128+N on a signal. Progress goes to stderr, the table to stdout.
// Everything a check makes (jails, cgroups, a VM, a scratch dir) is removed at
// the end, also on Ctrl-C; no check writes a kernel setting or loads a module,
// and traffic goes only to loopback and namespaces a check made.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs, usage } from '../lib/cli.ts';
import { CleanupStack, withSignals } from '../lib/cleanup.ts';
import { JailError, runMain, signalNumber } from '../lib/errors.ts';
import { cgroupMode, requireRoot } from '../lib/preflight.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { startupSvg } from './claims-chart.ts';
import { forkBombCheck, diskCheck, weightsCheck } from './claims-cgroups.ts';
import { checkLessonLinks, checkQuotes, lessonHref, load, makeScratch, stopChildren, subdir, type Check, type Context, type Outcome } from './claims-common.ts';
import { locksCheck } from './claims-locks.ts';
import { sightChecks } from './claims-sight.ts';
import { cpuCheck, networkCheck } from './claims-speed.ts';
import { startupCheck } from './claims-startup.ts';

const [kernel, pid1, hostname, devtmpfs] = sightChecks as [Check, Check, Check, Check];
/** In the order of the text's argument: what a container is, how fast, its rations, its locks, its /dev. */
const CHECKS: Check[] = [kernel, pid1, hostname, startupCheck, cpuCheck, networkCheck, weightsCheck, forkBombCheck, locksCheck, diskCheck, devtmpfs];

const flags = {
  only: { type: 'list', value: 'NAME', help: `run only this check (NAME,NAME for several): ${CHECKS.map((c) => c.name).join(' ')}` },
  markdown: { type: 'boolean', help: "print the table as Markdown (the README's section)" },
  svg: { type: 'string', value: 'FILE', help: 'write the start-up chart there (runs the startup check), e.g. docs/startup.svg' },
} as const;

interface Result {
  check: Check;
  outcome?: Outcome;
  error?: string;
  ms: number;
}

const say = (line: string): void => void process.stderr.write(line + '\n');

/** /etc/os-release's PRETTY_NAME ("Debian GNU/Linux 12 (bookworm)"), or NAME VERSION_ID ("Debian GNU/Linux 12") when short. */
function osName(short = false): string {
  let text = '';
  try {
    text = readFileSync('/etc/os-release', 'utf8');
  } catch {}
  const field = (k: string) => new RegExp(`^${k}="?([^"\n]*)"?$`, 'm').exec(text)?.[1];
  return (short ? [field('NAME')?.replace(' GNU/Linux', ''), field('VERSION_ID')].filter(Boolean).join(' ') : field('PRETTY_NAME')) || 'Linux';
}

const machine = (short = false): string => `${cpus().length} cores, ${osName(short)}, kernel ${release()}, cgroups ${cgroupMode()}`;

function pick(only: string[]): Check[] {
  const names = only.flatMap((o) => o.split(',')).map((n) => n.trim()).filter(Boolean);
  if (!names.length) return CHECKS;
  const unknown = names.filter((n) => !CHECKS.some((c) => c.name === n));
  if (unknown.length) throw new JailError(`no check named ${unknown.join(', ')}`, `the checks are: ${CHECKS.map((c) => c.name).join(' ')}`, 2);
  return CHECKS.filter((c) => names.includes(c.name));
}

const number = (c: Check): number => CHECKS.indexOf(c) + 1;
const lessonLabel = (c: Check): string => `${c.lesson.path.split('/')[1]}${c.lesson.heading ? ` · ${c.lesson.heading}` : ''}`;

function textTable(results: Result[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const verdict = r.outcome?.verdict ?? 'NOT RUN';
    lines.push(`${String(number(r.check)).padStart(2)}  ${verdict.padEnd(9)}  ${r.check.name}`);
    lines.push(`    “${r.check.zh}”`);
    lines.push(`    ${r.check.en}`);
    lines.push(`    measured: ${r.outcome?.figure ?? `could not run: ${r.error}`}`);
    if (r.outcome?.note) lines.push(`    note:     ${r.outcome.note}`);
    lines.push(`    lesson:   ${lessonHref(r.check.lesson)}`);
    lines.push('');
  }
  return lines.join('\n') + '\n';
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function markdownTable(results: Result[]): string {
  const rows = results.map((r) => {
    const verdict = r.outcome ? `**${r.outcome.verdict}**` : '**not run**';
    const figure = r.outcome ? r.outcome.figure + (r.outcome.note ? ` *(${r.outcome.note})*` : '') : `could not run: ${r.error}`;
    return `| ${number(r.check)} | “${cell(r.check.zh)}” — ${cell(r.check.en)} | ${verdict} | ${cell(figure)} | [${cell(lessonLabel(r.check))}](${lessonHref(r.check.lesson)}) |`;
  });
  return ['| # | the text says | verdict | measured | where the lesson proves it |', '|---|---|---|---|---|', ...rows].join('\n');
}

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage("The lesson text's claims, each measured on this machine: claim, verdict, figure, lesson.", 'sudo npm run claims [-- --only NAME… --markdown --svg FILE]', flags));
    return 0;
  }
  let picked = pick(args.flags.only);
  if (args.flags.svg && !picked.includes(startupCheck)) picked = CHECKS.filter((c) => c === startupCheck || picked.includes(c));
  requireRoot('the claims');
  checkLessonLinks(picked);
  checkQuotes(CHECKS);
  process.env.JAIL_QUIET = '1'; // the steps' explanations would drown the table; the checks read what they need

  const date = new Date().toISOString().slice(0, 10);
  const loadBefore = load();
  const t0 = performance.now();
  say(`npm run claims: ${picked.length} check${picked.length > 1 ? 's' : ''} on ${machine()}; load average ${loadBefore}`);
  const cleanup = new CleanupStack();
  const abort = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const results: Result[] = [];

  await withSignals(
    (sig) => {
      if (!interrupted) say(`\n${sig}: stopping the check that runs, then removing what it made`);
      interrupted ??= sig;
      abort.abort();
      stopChildren(sig);
    },
    async () => {
      try {
        const scratch = makeScratch(cleanup);
        let rootfs: Promise<string> | undefined;
        const ctx: Context = {
          signal: abort.signal,
          cleanup,
          rootfs: () => (rootfs ??= buildBusyboxRootfs(join(scratch, 'rootfs')).then(() => join(scratch, 'rootfs'))),
          scratch: (name) => subdir(scratch, name),
          say,
        };
        for (const check of picked) {
          if (interrupted) break;
          say(`\n[${number(check)}/${CHECKS.length}] ${check.name}: ${check.en}`);
          const t = performance.now();
          try {
            const outcome = await check.run(ctx);
            results.push({ check, outcome, ms: performance.now() - t });
            say(`  → ${outcome.verdict}: ${outcome.figure} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
          } catch (err) {
            if (interrupted) break;
            results.push({ check, error: (err as Error).message, ms: performance.now() - t });
            say(`  → could not run: ${(err as Error).message}`);
          }
        }
      } finally {
        await cleanup.unwind();
      }
    },
  );
  if (interrupted) return 128 + (signalNumber(interrupted) ?? 0);

  const loadAfter = load();
  const minutes = (performance.now() - t0) / 60_000;
  const context = `Measured ${date} on ${machine()}; load average ${loadBefore} before, ${loadAfter} after (other work was running); ${minutes.toFixed(1)} min.`;
  say('');
  process.stdout.write(args.flags.markdown ? `${context}\n\n${markdownTable(results)}\n` : `The text's claims, measured\n${context}\n\n${textTable(results)}`);

  if (args.flags.svg) {
    const startup = results.find((r) => r.check === startupCheck)?.outcome;
    if (!startup?.bars) throw new JailError('the startup check did not run: no chart to draw');
    const file = resolve(args.flags.svg);
    mkdirSync(dirname(file), { recursive: true });
    const load1 = (l: string) => l.split(' ')[0];
    const caption = [`${date} · ${machine(true)} · load average ${load1(loadBefore)} → ${load1(loadAfter)}`, 'start to exit of /bin/true (the VM boots Debian’s kernel, then runs true) · medians · log scale', ...(startup.chartCaption ? [startup.chartCaption] : [])];
    writeFileSync(file, startupSvg(startup.bars, 'Start-up: a jail, the tools beside it, and a VM', caption));
    say(`wrote ${args.flags.svg}`);
  }
  const notRun = results.filter((r) => r.error);
  say(notRun.length ? `${notRun.length} check${notRun.length > 1 ? 's' : ''} could not run: ${notRun.map((r) => r.check.name).join(', ')}` : `all ${results.length} checks ran, in ${minutes.toFixed(1)} min`);
  return notRun.length ? 1 : 0;
});
