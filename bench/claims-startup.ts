// Proves (or not) "containers start far faster than VMs": start to exit of
// /bin/true in a jail (`npm run step 4`, what a learner types), beside unshare,
// bwrap and runc (bench/measure.ts's rivalCommands, as bench/04-start.ts runs
// them), and of `true` in a VM booted by test:vm's harness (runInVm: Debian's
// kernel, a busybox initramfs, QEMU). Rounds alternate the two, so that a busy
// minute on the machine hits both. The VM runs under software emulation (TCG):
// where /dev/kvm exists, one KVM boot is tried first, and its failure is
// reported as the caveat it is (nested KVM fails on the workshop machine).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../lib/errors.ts';
import { runInVm } from '../test/vm/vm.ts';
import { fmtMs, lesson, repo, stillWanted, times, type Bar, type Check, type Context, type Outcome } from './claims-common.ts';
import { median, pool, rivalCommands, timeCommands, type Command } from './measure.ts';

const ROUNDS = 3;
/** Runs of each command per round (hyperfine), one VM per round. */
const RUNS = 5;
const JAIL = 'jail: npm run step 4';

interface VmRun {
  ms: number;
  bootMs?: number;
  /** Why it did not run `true` to a 0 status. */
  error?: string;
}

/** One VM, start to exit of `true`; the accelerator is test/vm/vm.ts's JAIL_VM_ACCEL (read when QEMU's command line is made). */
async function bootVm(ctx: Context, accel: 'tcg' | 'kvm', timeoutMs: number): Promise<VmRun> {
  const saved = { accel: process.env.JAIL_VM_ACCEL, cpu: process.env.JAIL_VM_CPU };
  if (accel === 'kvm') {
    Object.assign(process.env, { JAIL_VM_ACCEL: 'kvm', JAIL_VM_CPU: 'host' });
  } else {
    // the harness's default: tcg,thread=single, -cpu max
    delete process.env.JAIL_VM_ACCEL;
    delete process.env.JAIL_VM_CPU;
  }
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  ctx.signal.addEventListener('abort', onAbort);
  let error: string | undefined;
  const t0 = performance.now();
  try {
    const r = await runInVm(
      {
        command: ['true'],
        repo,
        memoryMiB: 512,
        cpus: 1,
        timeoutMs,
        env: { TERM: 'dumb' },
        debug: false,
        output: () => {},
        // a KVM that cannot run this guest says so at once, then hangs: stop it there
        log: (line) => {
          if (/KVM internal error|failed to initialize kvm|Could not access KVM/i.test(line)) {
            error ??= line.replace(/^qemu: /, '');
            abort.abort();
          }
        },
      },
      abort.signal,
    );
    const ms = performance.now() - t0;
    stillWanted(ctx);
    const silent = accel === 'kvm' ? `the guest did not boot within ${timeoutMs / 1000} s` : `timed out after ${timeoutMs / 1000} s`;
    return { ms, bootMs: r.bootMs, error: error ?? (r.timedOut ? silent : r.status !== 0 ? `exit status ${r.status ?? 'unknown'}` : undefined) };
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    for (const [k, v] of [['JAIL_VM_ACCEL', saved.accel], ['JAIL_VM_CPU', saved.cpu]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export const startupCheck: Check = {
  name: 'startup',
  zh: '从部署的易用性上和启动时间上，容器就完全可以秒了虚拟机了',
  en: 'in ease of deployment and in start-up time, containers beat virtual machines hands down',
  lesson: lesson('04-pivot-root', 'Measured'),
  async run(ctx): Promise<Outcome> {
    const rootfs = await ctx.rootfs();
    const dir = ctx.scratch('startup');
    const runc = { id: `claims-runc-${process.pid}`, state: join(dir, 'runc-state') };
    // a runc container outlives its runc process only if interrupted; take it down before the dir goes
    const deleteRunc = () => existsSync(runc.state) && spawnSync('runc', ['--root', runc.state, 'delete', '--force', runc.id], { stdio: 'ignore' });
    process.once('exit', deleteRunc);
    ctx.cleanup.defer(`runc delete ${runc.id}`, () => (process.off('exit', deleteRunc), deleteRunc()));
    const commands: Command[] = [{ name: JAIL, argv: ['npm', 'run', '--silent', 'step', '4', '--', '--rootfs', rootfs, '--', '/bin/true'] }, ...rivalCommands(rootfs, dir, runc, ctx.say)];

    let kvm: VmRun | undefined;
    if (existsSync('/dev/kvm')) {
      ctx.say('  one VM with -accel kvm first: does KVM work here?');
      kvm = await bootVm(ctx, 'kvm', 10_000); // a KVM boot of this kernel takes a second or two
      ctx.say(kvm.error ? `  KVM: ${kvm.error}` : `  KVM works: ${fmtMs(kvm.ms)}`);
    }
    const rows = new Map<string, number[]>();
    const vm: VmRun[] = [];
    const kvmRuns: VmRun[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      stillWanted(ctx);
      ctx.say(`  round ${round} of ${ROUNDS}: ${RUNS} runs of ${commands.map((c) => c.name).join(', ')}; then a VM`);
      pool(rows, timeCommands(commands, RUNS, { warmup: 1, cwd: repo, scratch: dir, progressTo: 'stderr', env: { JAIL_QUIET: '1' } }));
      const v = await bootVm(ctx, 'tcg', 120_000);
      if (v.error) throw new JailError(`the VM did not run true: ${v.error}`, 'npm run test:vm -- --debug -- true shows its console');
      vm.push(v);
      ctx.say(`  VM (TCG): ${fmtMs(v.ms)} start to exit, boot ${fmtMs(v.bootMs ?? NaN)}`);
      if (kvm && !kvm.error) kvmRuns.push(await bootVm(ctx, 'kvm', 60_000));
    }

    const m = (name: string) => median(rows.get(name)!);
    const bars: Bar[] = [
      { label: 'jail (npm run step 4)', ms: m(JAIL), kind: 'jail' },
      ...commands.slice(1).map((c) => ({ label: c.name.replace(' --root', ''), ms: m(c.name), kind: 'tool' as const })),
      { label: 'VM (QEMU, TCG)', ms: median(vm.map((v) => v.ms)), kind: 'vm' },
    ];
    if (kvmRuns.length) bars.push({ label: 'VM (QEMU, KVM)', ms: median(kvmRuns.map((v) => v.ms)), kind: 'vm' });
    const jail = m(JAIL);
    const tcg = median(vm.map((v) => v.ms));
    const ratio = tcg / jail;
    const runcMs = rows.has('runc run') ? m('runc run') : undefined;
    const figure =
      `medians: ${bars.map((b) => `${b.label} ${fmtMs(b.ms)}`).join(', ')}; VM (TCG) / jail ${times(ratio)}` +
      `${runcMs ? `, VM / runc ${times(tcg / runcMs)}` : ''}; the VM's boot alone (QEMU to the guest's shell) ${fmtMs(median(vm.map((v) => v.bootMs ?? NaN)))}` +
      ` (${ROUNDS} rounds: ${RUNS} runs of each tool, 1 VM)`;
    const note = kvmRuns.length
      ? 'KVM works here: its row is the fair VM; TCG emulates every instruction in software'
      : `TCG only (software emulation)${kvm?.error ? `: -accel kvm fails on this host (${kvm.error}; nested virtualisation)` : ': no /dev/kvm'}. A KVM VM would boot several times faster; the jail's time is mostly Node's own start (step 04, Measured)`;
    const verdict = ratio > 2 ? 'shown' : ratio >= 1 ? 'corrected' : 'wrong';
    const chartCaption = kvmRuns.length
      ? 'VM: QEMU with KVM, and with TCG (software emulation); 1 vCPU, 512 MiB'
      : `VM: QEMU, TCG (software emulation), 1 vCPU, 512 MiB${kvm?.error ? '; KVM fails on this nested host' : ''}: a KVM VM boots faster`;
    return { verdict, figure, note, bars, chartCaption };
  },
};
