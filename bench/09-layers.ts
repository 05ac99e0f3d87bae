// node --import tsx bench/09-layers.ts [--runs N] [--rounds N]
// What layers buy at a jail's start, measured side by side in one run:
//   - the Debian jail on an overlay of the debian image, against the same
//     locked jail (step 08) on a fresh `cp -a` copy of the rootfs, what a
//     private rootfs costs without layers (what step 07 made before it ran on an overlay):
//     time, and the disk each jail takes (du of its upper against du of the copy);
//   - the start of `step 9 --image busybox` and `--image debian` against
//     `step 8` on the busybox rootfs (a bind of a shared tree, no overlay).
// Aim: a jail on an overlay starts within 10% of step 08's busybox jail,
// whatever the image's size. A JAIL_HOME of the bench's own (in the scratch
// dir): a test rebuilding the shared busybox rootfs must not remake the
// image under us. The Debian tree is copied in from step 01's, untimed.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot } from '../lib/preflight.ts';
import { jailHome, rootfsDir } from '../lib/state.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { exitIfInterrupted, median, pool, printTable, scratchDir, timeCalls, timeCommands, type Command } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

const flags = {
  runs: { type: 'string', value: 'N', help: 'runs of each command per round (default 10)' },
  rounds: { type: 'string', value: 'N', help: 'rounds (default 3)' },
} as const;

/** Runs a command to completion; a failure stops the bench with its stderr. */
function must(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  exitIfInterrupted(r.signal);
  if (r.status !== 0) throw new JailError(`${argv.join(' ')} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
  return r.stdout;
}

const step = (...args: string[]): string[] => [process.execPath, 'bin/step.mjs', ...args];
/** du -sk: KiB the tree takes on disk. */
const diskKiB = (path: string): number => Number(must(['du', '-sk', path]).split('\t')[0]);
const mib = (kib: number): string => (kib >= 1024 ? `${(kib / 1024).toFixed(1)} MiB` : `${kib} KiB`);

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('Benchmark step 09: a jail on an overlay beside one on a fresh copy, and beside step 08.', 'node --import tsx bench/09-layers.ts [--runs N] [--rounds N]', flags));
    return 0;
  }
  requireRoot('starting jails');
  const [runs, rounds] = [args.flags.runs ?? '10', args.flags.rounds ?? '3'].map(Number) as [number, number];
  if (![runs, rounds].every((n) => Number.isInteger(n) && n > 0)) throw new JailError('--runs and --rounds take a whole number above 0', undefined, 2);
  const debianSource = rootfsDir('debian'); // the learner's, before JAIL_HOME points at ours
  if (!existsSync(join(debianSource, 'etc/debian_version'))) throw new JailError(`no Debian rootfs in ${debianSource}`, 'build it first: sudo npm run step 1 -- --debian', 2);

  const dir = scratchDir();
  chmodSync(dir, 0o755); // the jail's root walks through it to the layers
  process.env.JAIL_HOME = join(dir, 'home');
  process.env.JAIL_QUIET = '1';
  console.log(`bench 09-layers: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, ${rounds} rounds of ${runs} runs, JAIL_HOME ${jailHome()}`);
  await buildBusyboxRootfs(rootfsDir('busybox'));
  must(['mkdir', '-p', join(jailHome(), 'rootfs')]);
  must(['cp', '-a', debianSource, rootfsDir('debian')]);
  const debianKiB = diskKiB(rootfsDir('debian'));

  // once: the first use of a built-in image makes its layer from the rootfs (cp -a, then the tar's sha256)
  const firstUse = new Map<string, number[]>();
  for (const image of ['busybox', 'debian']) {
    const t0 = performance.now();
    must(step('9', '--image', image, '--', 'true'));
    firstUse.set(`step 9 --image ${image}, first use: the layer made`, [performance.now() - t0]);
  }

  const commands: Command[] = [
    { name: 'step 8: busybox rootfs (baseline)', argv: step('8', '--', 'true') },
    { name: 'step 9: busybox image, overlay', argv: step('9', '--image', 'busybox', '--', 'true') },
    { name: 'step 8: debian rootfs, shared', argv: step('8', '--debian', '--', 'true') },
    { name: 'step 9: debian image, overlay', argv: step('9', '--image', 'debian', '--', 'true') },
  ];
  const copy = join(dir, 'debian-copy');
  const COPY = 'step 8: debian, fresh cp -a copy';
  const rows = new Map<string, number[]>();
  for (let round = 1; round <= rounds; round++) {
    console.log(`round ${round} of ${rounds}`);
    pool(rows, timeCommands(commands, runs, { warmup: 2, cwd: repo, scratch: dir }));
    // the copy is part of such a jail's start; removing the last one is not
    const copied = await timeCalls(async () => {
      must(['cp', '-a', rootfsDir('debian'), copy]);
      must(step('8', '--rootfs', copy, '--', 'true'));
    }, runs, { warmup: 1, prepare: () => rmSync(copy, { recursive: true, force: true }) });
    pool(rows, new Map([[COPY, copied]]));
  }

  // disk: what one more jail costs, while it runs and after a `true`
  must(step('9', '--image', 'debian', '--name', 'bench-du', '--keep', '--', 'sh', '-c', 'echo hello > /root/hello'));
  const upperKiB = diskKiB(join(jailHome(), 'overlay/bench-du/upper'));
  must(step('9', 'rm', 'bench-du'));

  const order = [...commands.map((c) => c.name), COPY];
  printTable('step 09, start to exit of /bin/true (wall clock)', new Map([...order.map((k) => [k, rows.get(k)!] as const), ...firstUse]), [commands[0]!.name]);
  console.log('\ndisk taken by one more Debian jail');
  console.log(`  on an overlay: its upper, after writing /root/hello    ${mib(upperKiB).padStart(10)}`);
  console.log(`  on a copy: cp -a of the rootfs                         ${mib(debianKiB).padStart(10)}`);
  const base = median(rows.get(commands[0]!.name)!);
  for (const name of [commands[1]!.name, commands[3]!.name]) {
    const ratio = median(rows.get(name)!) / base;
    console.log(`  ${name}: ${ratio.toFixed(2)} x step 8's busybox jail (aim: within 1.10)`);
  }
  console.log(`  load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  return 0;
});
