// Proves what the text says about cgroups, and corrects what is out of date:
//   weights   "cgroups only set an upper limit": two busy jails on one CPU,
//             one with 3× the other's CPU weight (v2 cpu.weight 300:100, v1
//             cpu.shares 3072:1024), get CPU time about 3:1 — a share, not a
//             cap. Step 06 has no weight flag, so this check makes the two
//             cgroups itself and moves each jail's init in before its target runs
//   forkbomb  the lesson's while(fork()) inside `--pids 64`: pids.max is hit,
//             forks are refused, and `true` on the host starts as fast as before
//   disk      "how much disk a jail may use": the io controller's files limit
//             rates (bytes and operations per second), none limits a size
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { JailError } from '../lib/errors.ts';
import type { JailHook } from '../lib/spec.ts';
import { PREFIX } from '../lib/state.ts';
import { launchJail } from '../steps/03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../steps/04-pivot-root/jail.ts';
import { CGROUP_ROOT, readKeyed, readNumber, readText, readWords, WORKSHOP_CGROUP } from '../steps/06-cgroups/cgroupfs.ts';
import { detectCgroups, type CgroupTree } from '../steps/06-cgroups/hierarchy.ts';
import { fmtMs, lesson, run, sleep, stepArgv, stillWanted, waitFor, type Check, type Context, type Outcome, type RunResult } from './claims-common.ts';
import { median } from './measure.ts';

// ---------------------------------------------------------------------------
// weights

interface WeightGroup {
  label: 'heavy' | 'light';
  /** v2 cpu.weight (v1 cpu.shares is 1024/100 of it). */
  weight: number;
  /** The directories a process joins: the cpu tree's, and cpuacct's where it is mounted apart (v1). */
  dirs: string[];
  /** CPU time so far, µs. */
  usage(): number;
}

/** Not "baj…" nor build-a-jail: the tests' leak check would take them for a jail's, and `npm run clean` for its own. */
const WEIGHT_CGROUP = `claims-weight-${process.pid}`;

/** The parent and its two children, made and weighted by hand; removal registered before the first mkdir. */
function makeWeightGroups(ctx: Context, tree: CgroupTree): WeightGroup[] {
  const v2 = tree.version === 2;
  if (v2 && !readWords(join(CGROUP_ROOT, 'cgroup.subtree_control')).includes('cpu')) {
    throw new JailError(`the cpu controller is not switched on in ${CGROUP_ROOT}/cgroup.subtree_control`, 'this check does not change the root cgroup: echo +cpu > /sys/fs/cgroup/cgroup.subtree_control, then run it again');
  }
  const cpuRoot = tree.roots.cpu;
  if (!cpuRoot) throw new JailError('no cpu controller is mounted');
  const acctRoot = v2 ? cpuRoot : (tree.roots.cpuacct ?? cpuRoot);
  const parents = [...new Set([cpuRoot, acctRoot])].map((r) => join(r, WEIGHT_CGROUP));
  const remove = async () => {
    for (const parent of parents) {
      for (const child of ['heavy', 'light', '']) {
        const dir = join(parent, child);
        if (!existsSync(dir)) continue;
        // the jails are gone by now; a straggler of theirs is killed, then the directory goes
        for (let i = 0; i < 100 && readText(join(dir, 'cgroup.procs')); i++) {
          for (const pid of readText(join(dir, 'cgroup.procs')).split('\n').filter(Boolean)) spawnSync('kill', ['-9', pid]);
          await sleep(20);
        }
        rmdirSync(dir);
      }
    }
  };
  ctx.cleanup.defer(`remove the cgroups ${WEIGHT_CGROUP}`, remove);
  for (const p of parents) mkdirSync(p);
  if (v2) writeFileSync(join(parents[0]!, 'cgroup.subtree_control'), '+cpu');
  return (['heavy', 'light'] as const).map((label) => {
    const weight = label === 'heavy' ? 300 : 100;
    const dirs = parents.map((p) => join(p, label));
    for (const d of dirs) mkdirSync(d);
    if (v2) writeFileSync(join(dirs[0]!, 'cpu.weight'), String(weight));
    else writeFileSync(join(dirs[0]!, 'cpu.shares'), String((weight * 1024) / 100));
    const acct = join(acctRoot, WEIGHT_CGROUP, label);
    const usage = v2 ? () => readKeyed(join(acct, 'cpu.stat')).get('usage_usec') ?? 0 : () => (readNumber(join(acct, 'cpuacct.usage')) ?? 0) / 1000;
    return { label, weight, dirs, usage };
  });
}

/** Step 06's attach(), by hand: the init joins the cgroup, and CPU 0, while it waits for "go"; the target is born inside. */
const joinGroup = (g: WeightGroup): JailHook => ({
  name: `weight-${g.label}`,
  async attach(_spec, initPid) {
    for (const d of g.dirs) writeFileSync(join(d, 'cgroup.procs'), String(initPid));
    // -a: every thread of the Node init; its children inherit the main thread's CPUs
    const r = spawnSync('taskset', ['-a', '-p', '-c', '0', String(initPid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new JailError(`taskset: ${r.stderr.trim()}`);
  },
});

export const weightsCheck: Check = {
  name: 'weights',
  zh: '因为`cgroups`的隔离技术只能设定一个上限',
  en: 'because cgroups can only set an upper limit',
  lesson: lesson('06-cgroups', '"cgroups only set upper limits" — partly outdated'),
  async run(ctx): Promise<Outcome> {
    const tree = detectCgroups();
    const groups = makeWeightGroups(ctx, tree);
    const rootfs = await ctx.rootfs();
    const inits = new Map<string, number>();
    // a busy loop; timeout ends it even if this process could not stop it
    const jobs = groups.map((g) =>
      launchJail(
        { ...pivotSpec(rootfs, g.label, false, ['timeout', '60', 'sh', '-c', 'while :; do :; done']), name: `${PREFIX}-claims-${g.label}-${process.pid}` },
        { init: initPath, hooks: [joinGroup(g)], onStarted: (pid) => inits.set(g.label, pid) },
      ),
    );
    const ended = Promise.all(jobs.map((j) => j.catch((e: Error) => e)));
    let shares: number[];
    try {
      const failed = ended.then((rs) => rs.find((r) => r instanceof Error));
      await Promise.race([waitFor('both busy jails', () => (inits.size === 2 ? true : undefined), 30_000, ctx.signal), failed.then((e) => Promise.reject(e ?? new JailError('a busy jail ended early')))]);
      await sleep(500, ctx.signal); // both targets spinning
      const before = groups.map((g) => g.usage());
      await sleep(3000, ctx.signal);
      shares = groups.map((g, i) => g.usage() - before[i]!);
      stillWanted(ctx);
      if (inits.size !== 2 || shares.some((s) => s <= 0)) throw new JailError('a busy jail used no CPU in the window');
    } finally {
      for (const pid of inits.values()) spawnSync('kill', ['-TERM', String(pid)]); // PID 1 passes it to the loop
      await ended;
    }
    const [heavy, light] = shares as [number, number];
    const ratio = heavy / light;
    const v1 = tree.version === 1;
    return {
      verdict: ratio >= 2 && ratio <= 4.5 ? 'corrected' : 'shown',
      figure:
        `two busy jails on CPU 0, ${v1 ? 'cpu.shares 3072 : 1024' : 'cpu.weight 300 : 100'}: CPU time ${(heavy / 1000).toFixed(0)} : ${(light / 1000).toFixed(0)} ms in 3 s = ${ratio.toFixed(2)} : 1` +
        ` (${((heavy / (heavy + light)) * 100).toFixed(0)} % : ${((light / (heavy + light)) * 100).toFixed(0)} %); neither was capped`,
      note: 'a weight shares a busy CPU and caps nothing; memory has guarantees too on v2: memory.min (never reclaimed) and memory.low (reclaimed last), not measured here',
    };
  },
};

// ---------------------------------------------------------------------------
// forkbomb

/** `true` on the host: how long it takes to start and end, in ms. */
function hostLatency(n: number): number[] {
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    spawnSync('/bin/true');
    ts.push(performance.now() - t0);
  }
  return ts;
}

export const forkBombCheck: Check = {
  name: 'forkbomb',
  zh: '就算容器里面运行一个fork炸弹也不怕了，反正影响不到外面的宿主机',
  en: 'even a fork bomb inside the container is nothing to fear: it cannot touch the host',
  lesson: lesson('06-cgroups', 'Proving it, from inside'),
  async run(ctx): Promise<Outcome> {
    const tree = detectCgroups();
    if (!tree.roots.pids) throw new JailError('no pids controller is mounted');
    const name = `claims-bomb-${process.pid}`;
    const dir = join(tree.roots.pids, WORKSHOP_CGROUP, `${PREFIX}-${name}`);
    // test/06-cgroups.test.ts's bomb that ends: every process forks for ever, for 3 s; then kill -9 -1 (PID 1 is immune)
    const bomb = 'bomb() { while :; do bomb & done; }; sleep 3 & timer=$!; (bomb 2>/dev/null) & wait $timer; kill -9 -1; echo over';
    const calm = hostLatency(20);
    const job = run(stepArgv(6, ['--rootfs', await ctx.rootfs(), '--pids', '64', '--cpus', '0.5', '--name', name], ['sh', '-c', bomb]), { env: { JAIL_QUIET: '0', NO_COLOR: '1' } });
    let current: number | undefined;
    let during: number[] = [];
    let r: RunResult;
    try {
      await waitFor('the first refused fork', () => (Number(/max (\d+)/.exec(readText(join(dir, 'pids.events')))?.[1] ?? 0) > 0 ? true : undefined), 30_000, ctx.signal);
      current = readNumber(join(dir, 'pids.current'));
      during = hostLatency(20);
    } finally {
      r = await job; // the bomb ends by itself after 3 s
    }
    if (r.status !== 0) throw new JailError(`the bomb's jail exited with ${r.status}: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`);
    const report = /tasks at most (.+?); forks refused: (\d+)/.exec(r.stderr);
    if (!report) throw new JailError("step 06's report says nothing about tasks and refused forks");
    const [c, d] = [median(calm), median(during)];
    const responsive = d < Math.max(5, 4 * c);
    return {
      verdict: Number(report[2]) > 0 && (current ?? 0) <= 64 && responsive ? 'shown' : 'wrong',
      figure: `--pids 64: ${report[2]} forks refused, tasks at most ${report[1]} (step 06's report; pids.current ${current} when the host looked); \`true\` on the host ${fmtMs(c)} calm, ${fmtMs(d)} during the bomb (medians of 20)`,
      note: 'without pids.max the same bomb would fill the host’s PID table; --cpus 0.5 keeps the spinning polite as well',
    };
  },
};

// ---------------------------------------------------------------------------
// disk

export const diskCheck: Check = {
  name: 'disk',
  zh: '磁盘能用多少啊，磁盘的速度能给你多少啊',
  en: 'how much disk it may use, how fast the disk may go for it',
  lesson: lesson('06-cgroups'),
  async run(): Promise<Outcome> {
    const tree = detectCgroups();
    const root = tree.roots.blkio;
    if (!root) throw new JailError('no io (v1: blkio) controller is mounted');
    // a probe cgroup shows the files a jail's cgroup gets (the root cgroup lacks some)
    const probe = join(root, `claims-io-probe-${process.pid}`);
    mkdirSync(probe);
    let files: string[];
    try {
      files = readdirSync(probe).filter((f) => /^(io|blkio)\./.test(f));
    } finally {
      rmdirSync(probe);
    }
    if (!files.length) throw new JailError(`the probe cgroup in ${root} has no io files (is io switched on in cgroup.subtree_control?)`);
    const rates = files.filter((f) => /(bps|iops)_device$|^io\.max$/.test(f));
    const sizes = files.filter((f) => /size|space|quota|capacity|limit_in_bytes/.test(f));
    return {
      verdict: sizes.length ? 'shown' : 'corrected',
      figure: `the io controller's ${files.length} files (cgroup v${tree.version}): rate limits ${rates.join(', ') || 'none'}; size limits ${sizes.join(', ') || 'none'}. Speed is proven by test/06-cgroups.test.ts ("io: a write … under --io-write-bps runs at about the set rate")`,
      note: "a size limit is the filesystem's: a quota (ext4/XFS project quota) or a filesystem of fixed size per jail (a loop device, tmpfs size=)",
    };
  },
};
