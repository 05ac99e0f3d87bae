// Proves the text's two speed claims by measuring them side by side:
//   cpu      a container uses the CPU directly: the same CPU-bound busybox loop,
//            timed by busybox `time` on the host (chroot into the same rootfs,
//            the same binary) and in a jail of step 04, rounds alternating, on
//            one CPU; the ratio of CPU time (user + sys), and of wall time
//   network  the host's network has the higher throughput (no forwarding):
//            bench/05-network.ts, run as it is (it exports nothing) with fewer
//            rounds, its table parsed: a jail in host mode and one on the bridge,
//            each talking to a network namespace that stands in for the world;
//            the whole bench in a network namespace of its own (see ISOLATED)
import { cpus } from 'node:os';
import { JailError } from '../lib/errors.ts';
import { BRIDGE } from '../steps/05-network-bridge/addresses.ts';
import { busyboxTime, lesson, run, stepArgv, stillWanted, type Check, type Outcome } from './claims-common.ts';
import { median } from './measure.ts';

const ROUNDS = 7;
const LOOP = 'i=0; while [ $i -lt 500000 ]; do i=$((i+1)); done';

const pct = (r: number): string => `${r >= 1 ? '+' : '−'}${Math.abs((r - 1) * 100).toFixed(1)} %`;

export const cpuCheck: Check = {
  name: 'cpu',
  zh: '容器不管是对CPU的利用，还是内存的操作或者外部设备的操作，对一切硬件的操作实际上都是直接操作的',
  en: 'whether CPU, memory or devices, a container uses all hardware directly, with nothing in between',
  lesson: lesson('06-cgroups', 'Measured'),
  async run(ctx): Promise<Outcome> {
    const rootfs = await ctx.rootfs();
    // one CPU for both, the last (as bench/05-network.ts): whatever else runs there slows both alike
    const pin = ['taskset', '-c', String(cpus().length - 1)];
    const timed = ['sh', '-c', `time sh -c '${LOOP}'`];
    const host = async () => {
      const r = await run([...pin, 'chroot', rootfs, '/bin/sh', '-c', `time sh -c '${LOOP}'`]);
      if (r.status !== 0) throw new JailError(`the loop on the host exited with ${r.status}: ${r.stderr.trim()}`);
      return busyboxTime(r.stderr);
    };
    const jail = async () => {
      const r = await run([...pin, ...stepArgv(4, ['--rootfs', rootfs], timed)]);
      if (r.status !== 0) throw new JailError(`the loop in the jail exited with ${r.status}: ${r.stderr.trim()}`);
      return busyboxTime(r.stderr);
    };
    const cpuRatios: number[] = [];
    const realRatios: number[] = [];
    const hostCpu: number[] = [];
    const jailCpu: number[] = [];
    await host(); // warm-up: the page cache, busybox's pages
    for (let i = 0; i < ROUNDS; i++) {
      stillWanted(ctx);
      // every other round the jail goes first
      const [h, j] = i % 2 ? await jail().then(async (j) => [await host(), j] as const) : await host().then(async (h) => [h, await jail()] as const);
      cpuRatios.push(j.cpu / h.cpu);
      realRatios.push(j.real / h.real);
      hostCpu.push(h.cpu);
      jailCpu.push(j.cpu);
    }
    const r = median(cpuRatios);
    const w = median(realRatios);
    return {
      verdict: Math.abs(r - 1) <= 0.05 ? 'shown' : 'wrong',
      figure: `a busybox sh loop (500 000 additions): CPU time jail/host ${r.toFixed(3)} (${pct(r)}; medians ${median(hostCpu).toFixed(0)} ms host, ${median(jailCpu).toFixed(0)} ms jail), wall time ${w.toFixed(3)}; median of ${ROUNDS} alternating rounds, both on one CPU`,
      note: 'namespaces cost a process nothing once it runs: only its start (startup) and its packets (network) pay',
    };
  },
};

/**
 * bench/05-network.ts, in a network namespace of its own (and a mount
 * namespace with a sysfs that shows it): there the bench's "host" is that
 * namespace's stack — the kernel's code for a namespace and for the host is
 * the same — and its bridge, rules and forwarding switch are its alone. So
 * tests running beside it (with their own baj0) neither disturb it nor are
 * disturbed, and whatever it makes dies with the namespace, also if killed.
 */
const ISOLATED = [
  'set -e',
  'ip link set lo up',
  // the new sysfs would hide the cgroup mounts under /sys: carry them over
  't=$(mktemp -d)',
  'mount --rbind /sys/fs/cgroup "$t"',
  'mount -t sysfs sysfs /sys',
  'mount --move "$t" /sys/fs/cgroup',
  'rmdir "$t"',
  'exec "$@"',
].join('; ');

function row(out: string, name: string): { value: number; ratio?: number } {
  const m = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\<>-]/g, '\\$&')}\\s+([\\d.]+) MB/s\\s+\\S+(?:\\s+([\\d.]+)\\s{2})?`, 'm').exec(out);
  if (!m) throw new JailError(`bench/05-network.ts printed no "${name}" row:\n${out.slice(-800)}`);
  return { value: Number(m[1]), ratio: m[2] ? Number(m[2]) : undefined };
}

export const networkCheck: Check = {
  name: 'network',
  zh: '这也有个好处，就是网络的吞吐量比较高，不用进行转发之类的操作',
  en: "sharing the host's network has one advantage: higher throughput, nothing has to be forwarded",
  lesson: lesson('05-network-bridge', 'Measured'),
  async run(ctx): Promise<Outcome> {
    const bench = [process.execPath, '--import', 'tsx', 'bench/05-network.ts', '--mb', '100', '--runs', '9', '--trips', '2000'];
    ctx.say(`  $ unshare --net --mount -- ${bench.slice(1).join(' ')}`);
    const r = await run(['unshare', '--net', '--mount', '--propagation', 'private', '--', 'sh', '-c', ISOLATED, 'sh', ...bench]);
    stillWanted(ctx);
    if (r.status !== 0) throw new JailError(`bench/05-network.ts exited with ${r.status}: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    const inHost = row(r.stdout, 'host mode <- world');
    const inBridge = row(r.stdout, 'bridge <- world');
    const outHost = row(r.stdout, 'host mode -> world');
    const outBridge = row(r.stdout, 'bridge -> world');
    const ratios = [inBridge.ratio, outBridge.ratio];
    if (ratios.some((x) => x === undefined)) throw new JailError('bench/05-network.ts printed no ratio for the bridge');
    const mean = (ratios[0]! + ratios[1]!) / 2;
    return {
      verdict: mean < 0.97 ? 'shown' : mean > 1.03 ? 'wrong' : 'corrected',
      figure:
        `bridge / host mode: ${ratios[0]!.toFixed(2)} world → jail (${inBridge.value} vs ${inHost.value} MB/s), ` +
        `${ratios[1]!.toFixed(2)} jail → world (${outBridge.value} vs ${outHost.value} MB/s); bench/05-network.ts in a network namespace of its own, 9 × 100 MB each way, paths taking turns, on one CPU`,
      note: mean < 0.97 ? `the bridge costs ${((1 - mean) * 100).toFixed(0)} %: a veth, ${BRIDGE}, forwarding and MASQUERADE; host mode pays with a port per service instead` : 'no difference beyond the noise on this run',
    };
  },
};
