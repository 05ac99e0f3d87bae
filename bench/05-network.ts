// Step 05's claim, measured. The lesson text says the host's network has the
// higher throughput, because nothing has to be forwarded ("网络的吞吐量比较高，
// 不用进行转发之类的操作"), and that the price is a port per service. So: the
// same traffic between a jail and one peer, over two paths side by side:
//
//   host mode   a jail with --net host: the host's own interface, no bridge, no NAT
//   bridge      a jail with --net bridge: its eth0, the veth pair, baj0, the host's
//               routing (ip_forward) and MASQUERADE, then the same interface as above
//
// The peer is "the world": a network namespace this bench makes, behind a
// veth pair of its own (baj-bw0 on the host, eth0 in the world, 203.0.113.0/24,
// a documentation range routed nowhere), a stand-in for the next machine on
// the network. The jail always opens the connection (so the bridged one's is
// MASQUERADEd), and each path is measured three ways:
//
//   <-   the world sends --mb megabytes, the jail reads them
//   ->   the jail sends --mb megabytes, the world reads them
//   <->  one byte there and back, --trips times in a row: the cost per packet,
//        which a bulk stream in 64 KB segments hides
//
// Two more rows, for scale: the host-mode jail reading from 127.0.0.1 (lo
// instead of a veth), and the host reading through a port the bridged jail
// published on 127.0.0.1 (the launcher's userland proxy, then the bridge).
//
// Each transfer is timed from connect until the last byte has arrived;
// --runs of each, the paths taking turns (every other round in reverse
// order), so that a busy minute slows every path alike. Shown: the medians, and each ratio as the median of the
// rounds' ratios (a busy moment hits both transfers of a round alike).
// Every program runs on one CPU (--cpu).
// The jails are real (bin/step.mjs 5). The senders and receivers are a few
// lines of Node run in a namespace with `nsenter -n` (the busybox rootfs has
// no Node, and only the network namespace decides the path a packet takes).
// Traffic goes only between namespaces this bench made. Everything is
// removed at the end, also after Ctrl-C; if the bench is killed outright,
// its children die with it (setpriv --pdeathsig), and the world's veth goes
// with the world.
//   sudo node --import tsx bench/05-network.ts [--mb 200] [--runs 9] [--trips 20000] [--cpu N|all]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs, rootfsOrDefault, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot, requireTools } from '../lib/preflight.ts';
import { PREFIX } from '../lib/state.ts';
import { childrenOf } from '../lib/proc.ts';
import { requireRootfs } from '../steps/01-rootfs/rootfs.ts';
import { BRIDGE, jailSubnet, vethNames } from '../steps/05-network-bridge/addresses.ts';
import { isLive, readLeases } from '../steps/05-network-bridge/leases.ts';
import { median } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const flags = {
  mb: { type: 'string', value: 'N', help: 'megabytes (10^6 bytes) per transfer', default: '200' },
  runs: { type: 'string', value: 'N', help: 'transfers per path', default: '9' },
  trips: { type: 'string', value: 'N', help: 'round trips of one byte per request/response test', default: '20000' },
  cpu: { type: 'string', value: 'N|all', help: 'the one CPU every program of the bench runs on (default: the last one); all: no pinning' },
} as const;

/** The world: TEST-NET-3, not the tests' 198.51.100.0/24, so that a test run beside the bench does not collide. */
const WORLD = { veth: 'baj-bw0', host: '203.0.113.1', addr: '203.0.113.2', prefix: 24 };
const PUBLISHED = 23390;

// Six small programs, a server and a client for each way. A Node receiver
// that is handed each chunk as a new Buffer ('data' events) is slower than
// the kernel paths it should measure; a connecting socket can read into one
// fixed buffer (onread), about twice as fast on this machine's loopback. So
// "<-", where the jail connects and reads, is the sharper measurement; "->",
// where the jail connects and sends, is the one the text talks about.

/** Server: sends N megabytes to each client, then closes. */
const SENDER = `
const net = require('net');
const chunk = Buffer.alloc(1 << 20, 120);
net.createServer((s) => {
  let left = +process.argv[3] * 1e6;
  s.on('error', () => {});
  (function pump() {
    while (left > 0) {
      const n = Math.min(chunk.length, left);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
    }
    s.end();
  })();
}).listen(+process.argv[2], process.argv[1], () => console.log('ready'));
`;

/** Client: reads until the server closes, into one buffer; the clock runs from connect to the last byte. */
const RECEIVER = `
const net = require('net');
let bytes = 0, t0;
const s = net.connect({ host: process.argv[1], port: +process.argv[2], onread: { buffer: Buffer.allocUnsafe(1 << 20), callback: (n) => { bytes += n; } } });
s.on('connect', () => { t0 = process.hrtime.bigint(); });
s.on('end', () => console.log(JSON.stringify({ bytes, ms: Number(process.hrtime.bigint() - t0) / 1e6 })));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/** Server: counts what arrives on each connection, answers the count when the client is done. */
const SINK = `
const net = require('net');
net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (d) => (n += d.length));
  s.on('end', () => s.end(n + '\\n'));
}).listen(+process.argv[2], process.argv[1], () => console.log('ready'));
`;

/** Client: sends N megabytes, then waits for the sink's count: the clock stops when the last byte has arrived. */
const SOURCE = `
const net = require('net');
const total = +process.argv[3] * 1e6;
const chunk = Buffer.alloc(1 << 20, 120);
const s = net.connect({ host: process.argv[1], port: +process.argv[2], allowHalfOpen: true });
let t0, sent = 0, reply = '';
s.on('connect', () => { t0 = process.hrtime.bigint(); pump(); });
function pump() {
  while (sent < total) {
    const n = Math.min(chunk.length, total - sent);
    sent += n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
  }
  s.end();
}
s.on('data', (d) => (reply += d));
s.on('end', () => {
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(JSON.stringify({ bytes: Number(reply.trim()), ms }));
});
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/** Server: echoes what it reads (the other side of a request/response test). */
const ECHO = `
require('net').createServer((s) => { s.setNoDelay(true); s.on('error', () => {}); s.pipe(s); }).listen(+process.argv[2], process.argv[1], () => console.log('ready'));
`;

/** Client: one byte there and back, N times in a row; answers like the others, with bytes = round trips. */
const PINGPONG = `
const net = require('net');
const total = +process.argv[3];
const one = Buffer.from('x');
let done = 0, t0;
const s = net.connect({ host: process.argv[1], port: +process.argv[2], noDelay: true });
s.on('connect', () => { t0 = process.hrtime.bigint(); s.write(one); });
s.on('data', (d) => {
  done += d.length;
  if (done < total) return void s.write(one);
  console.log(JSON.stringify({ bytes: done, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
  s.destroy();
});
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/**
 * `taskset -c N`: every program of the bench on one CPU, the jails' launchers
 * (one of them is the proxy) too. Then each path pays for all the work it
 * causes, the kernel's included (a veth hands a packet on in the sender's
 * softirq, on the same CPU), and another program on the machine does not
 * decide which of the two ends waits for the other: on this 2-CPU machine
 * the spread of unpinned runs was several times wider.
 */
let pin: string[] = [];

/** Everything this bench started: jails' launchers, the world's holder, senders and receivers. */
const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function waitForLine(child: ChildProcess, what: string, test: (out: string) => boolean, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}:\n${err}`)), timeoutMs);
    child.stdout!.on('data', (d) => {
      out += d;
      if (test(out)) {
        clearTimeout(timer);
        resolve(out);
      }
    });
    child.stderr?.on('data', (d) => (err += d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (!test(out)) reject(new Error(`${what} exited with ${code}:\n${err}`));
    });
  });
}

function must(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new JailError(`${argv.join(' ')}: ${r.stderr.trim()}`);
}

// ---------------------------------------------------------------------------
// The world: a namespace held by a sleeping process, reachable only through the host

/** /proc/PID/ns/net of the world's holder; the namespace (and its veth) goes when the holder dies. */
async function makeWorld(): Promise<string> {
  const holder = track(spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--net', '--', 'sleep', 'infinity'], { stdio: 'ignore' }));
  const netns = `/proc/${holder.pid}/ns/net`;
  const host = readlinkSync('/proc/self/ns/net');
  for (let i = 0; ; i++) {
    try {
      if (readlinkSync(netns) !== host) break;
    } catch {}
    if (i > 200) throw new JailError('the world namespace did not appear');
    await new Promise((r) => setTimeout(r, 10));
  }
  must(['ip', 'link', 'add', WORLD.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(holder.pid)]);
  must(['ip', 'addr', 'add', `${WORLD.host}/${WORLD.prefix}`, 'dev', WORLD.veth]);
  must(['ip', 'link', 'set', WORLD.veth, 'up']);
  for (const cmd of [['addr', 'add', `${WORLD.addr}/${WORLD.prefix}`, 'dev', 'eth0'], ['link', 'set', 'eth0', 'up'], ['link', 'set', 'lo', 'up']]) {
    must(['nsenter', `--net=${netns}`, 'ip', ...cmd]); // no route back to the jails: only the host's NAT brings answers home
  }
  return netns;
}

// ---------------------------------------------------------------------------
// Jails, and programs in their network namespaces

interface Jail {
  init: number;
  ip?: string;
}

/** A jail that only holds its network; setpriv --pdeathsig: if this bench dies, the launcher is told to stop and clean up. */
async function startJail(name: string, args: string[]): Promise<Jail> {
  const launcher = track(
    spawn('setpriv', ['--pdeathsig', 'TERM', '--', ...pin, process.execPath, 'bin/step.mjs', '5', '--name', name, ...args, '--', 'sh', '-c', 'ip -4 -o addr show dev eth0 2>/dev/null; echo ready; exec sleep 3600'], {
      cwd: repo,
      env: { ...process.env, JAIL_QUIET: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const out = await waitForLine(launcher, `jail ${name}`, (o) => o.includes('ready'), 60_000);
  // launcher (setpriv became node) -> unshare -> the init
  const init = childrenOf(launcher.pid!)
    .flatMap(childrenOf)
    .find((pid) => /^NSpid:\s+\d+\s+1$/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')));
  if (!init) throw new Error(`jail ${name}: no init found`);
  return { init, ip: /inet (\S+)\//.exec(out)?.[1] };
}

/** Runs a Node script in a network namespace: a jail's (its init's pid), the world's (a path), or the host's (none). */
function nodeIn(where: number | string | undefined, script: string, args: string[]): ChildProcess {
  const argv = [process.execPath, '-e', script, ...args];
  const enter = where === undefined ? [] : ['nsenter', typeof where === 'number' ? `--net=/proc/${where}/ns/net` : `--net=${where}`];
  return track(spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...pin, ...enter, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** Starts a server (SENDER or SINK) and waits until it listens. */
async function serve(where: number | string | undefined, script: string, host: string, port: number, mb: number): Promise<void> {
  await waitForLine(nodeIn(where, script, [host, String(port), String(mb)]), `the server on ${host}:${port}`, (o) => o.includes('ready'));
}

/** Runs a client (RECEIVER or SOURCE) once: MB/s. */
async function transfer(where: number | undefined, script: string, host: string, port: number, mb: number): Promise<number> {
  const out = await waitForLine(nodeIn(where, script, [host, String(port), String(mb)]), `a transfer with ${host}:${port}`, (o) => o.includes('}'), 120_000);
  const { bytes, ms } = JSON.parse(out) as { bytes: number; ms: number };
  if (bytes !== mb * 1e6) throw new Error(`${host}:${port}: ${bytes} of ${mb * 1e6} bytes arrived`);
  return bytes / 1e6 / (ms / 1000);
}

/** Runs PINGPONG once: thousands of round trips per second. */
async function pingpong(where: number | undefined, host: string, port: number, count: number): Promise<number> {
  const out = await waitForLine(nodeIn(where, PINGPONG, [host, String(port), String(count)]), `round trips with ${host}:${port}`, (o) => o.includes('}'), 120_000);
  const { bytes, ms } = JSON.parse(out) as { bytes: number; ms: number };
  if (bytes !== count) throw new Error(`${host}:${port}: ${bytes} of ${count} round trips`);
  return bytes / ms; // per millisecond: thousands per second
}

// ---------------------------------------------------------------------------
// The way back

const exited = (c: ChildProcess): Promise<void> => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

/** Stops everything this bench started; the launchers unwind (veth, lease, rules, and the bridge with the last jail). */
async function stopAll(): Promise<void> {
  const all = [...children];
  for (const c of all) c.kill('SIGTERM');
  const late = setTimeout(() => all.forEach((c) => c.kill('SIGKILL')), 20_000);
  await Promise.all(all.map(exited));
  clearTimeout(late);
  children.clear();
  // the world's veth goes with its namespace, a moment after the holder dies
  for (let i = 0; existsSync(`/sys/class/net/${WORLD.veth}`) && i < 50; i++) await new Promise((r) => setTimeout(r, 20));
  if (existsSync(`/sys/class/net/${WORLD.veth}`)) spawnSync('ip', ['link', 'del', WORLD.veth]);
}

let stopping: Promise<void> | undefined;
const stopOnce = (): Promise<void> => (stopping ??= stopAll());

const readSys = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8').trim() : 'absent');
const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('TCP throughput and round trips between a jail and a namespace standing in for the network: host mode against the bridge (plus loopback and the userland proxy).', 'sudo node --import tsx bench/05-network.ts [--mb N] [--runs N] [--trips N] [--cpu N|all]', flags));
    return 0;
  }
  const mb = Number(args.flags.mb);
  const runs = Number(args.flags.runs);
  const trips = Number(args.flags.trips);
  if (!(mb > 0) || !(runs > 0) || !(trips > 0)) throw new JailError('--mb, --runs and --trips take positive numbers', undefined, 2);
  requireRoot('the network benchmark');
  requireTools('ip', 'iptables', 'iptables-save', 'nsenter', 'unshare', 'setpriv', 'taskset');
  const cpu = args.flags.cpu ?? String(cpus().length - 1);
  if (cpu !== 'all' && !(/^\d+$/.test(cpu) && Number(cpu) < cpus().length)) throw new JailError(`--cpu '${cpu}': this machine has CPUs 0 to ${cpus().length - 1}`, 'give one of them, or --cpu all', 2);
  if (cpu !== 'all') pin = ['taskset', '-c', cpu];
  requireRootfs(rootfsOrDefault(undefined));
  if (existsSync(`/sys/class/net/${BRIDGE}`)) throw new JailError(`${BRIDGE} exists: other jails are running`, 'stop them (or sudo npm run clean) so that they do not share the bridge with the benchmark');
  if (existsSync(`/sys/class/net/${WORLD.veth}`)) throw new JailError(`${WORLD.veth} exists: another run of this bench is going on, or was killed`, `sudo ip link del ${WORLD.veth}`);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void stopOnce().then(() => process.exit(sig === 'SIGINT' ? 130 : 143)));

  const gateway = jailSubnet().gateway;
  const ipForward = readSys('/proc/sys/net/ipv4/ip_forward');
  let bridgedVeth: string | undefined;
  const loadBefore = load();
  try {
    console.log(`The world: a network namespace on ${WORLD.addr}/${WORLD.prefix}, behind ${WORLD.veth} (${WORLD.host} on the host) …`);
    const world = await makeWorld();
    console.log(`Jails: one on ${BRIDGE} (publishing 127.0.0.1:${PUBLISHED}:5002), one in host mode …`);
    const [b, h] = await Promise.all([startJail('bench-bridge', ['--publish', `127.0.0.1:${PUBLISHED}:5002`]), startJail('bench-host', ['--net', 'host'])]);
    if (b.ip) bridgedVeth = vethNames(jailSubnet(), b.ip).host;
    await Promise.all([
      serve(world, SENDER, WORLD.addr, 5000, mb),
      serve(world, SINK, WORLD.addr, 5001, mb),
      serve(world, ECHO, WORLD.addr, 5003, mb),
      serve(h.init, SENDER, '127.0.0.1', 5002, mb),
      serve(b.init, SENDER, '0.0.0.0', 5002, mb),
    ]);
    const bridged = `veth, ${BRIDGE}, forwarding, MASQUERADE`;
    const paths: { name: string; unit: string; how: string; base?: number; go: () => Promise<number> }[] = [
      { name: 'host mode <- world', unit: 'MB/s', how: `${WORLD.veth} only`, go: () => transfer(h.init, RECEIVER, WORLD.addr, 5000, mb) },
      { name: 'bridge <- world', unit: 'MB/s', how: `${bridged}, ${WORLD.veth}`, base: 0, go: () => transfer(b.init, RECEIVER, WORLD.addr, 5000, mb) },
      { name: 'host mode -> world', unit: 'MB/s', how: `${WORLD.veth} only`, go: () => transfer(h.init, SOURCE, WORLD.addr, 5001, mb) },
      { name: 'bridge -> world', unit: 'MB/s', how: `${bridged}, ${WORLD.veth}`, base: 2, go: () => transfer(b.init, SOURCE, WORLD.addr, 5001, mb) },
      { name: 'host mode <- loopback', unit: 'MB/s', how: '127.0.0.1 over lo', base: 0, go: () => transfer(h.init, RECEIVER, '127.0.0.1', 5002, mb) },
      { name: 'host <- published port', unit: 'MB/s', how: `127.0.0.1:${PUBLISHED}, launcher's proxy, ${gateway}, ${BRIDGE}, ${b.ip}:5002`, base: 0, go: () => transfer(undefined, RECEIVER, '127.0.0.1', PUBLISHED, mb) },
      { name: 'host mode <-> world', unit: 'k RT/s', how: `${WORLD.veth} only`, go: () => pingpong(h.init, WORLD.addr, 5003, trips) },
      { name: 'bridge <-> world', unit: 'k RT/s', how: `${bridged}, ${WORLD.veth}`, base: 6, go: () => pingpong(b.init, WORLD.addr, 5003, trips) },
    ];
    console.log(`${runs} × ${mb} MB (or ${trips} round trips of one byte) per path, taking turns, ${cpu === 'all' ? `on all ${cpus().length} CPUs` : `on CPU ${cpu} of ${cpus().length}`}; bridge-nf-call-iptables=${readSys('/proc/sys/net/bridge/bridge-nf-call-iptables')}; load average ${loadBefore} …`);
    for (const p of paths) await p.go(); // warm-up: JIT, neighbour tables, TCP's first window
    const results = paths.map(() => [] as number[]);
    for (let r = 0; r < runs; r++) {
      const order = [...paths.keys()];
      if (r % 2) order.reverse(); // every other round backwards: neither path of a pair always goes first
      for (const i of order) results[i]!.push(await paths[i]!.go());
    }
    console.log(`\nload average ${loadBefore} before, ${load()} after`);
    console.log('<- : the world (or lo, or the proxy) sends, the jail reads; -> : the jail sends, the world reads; <-> : round trips (k RT/s: thousands per second)\n');
    console.log(`${'path'.padEnd(24)} ${'median'.padStart(8)} ${'unit'.padEnd(6)} ${'min-max'.padStart(11)}  ${'ratio'.padStart(5)}  ${'to'.padEnd(20)}  through`);
    for (const [i, p] of paths.entries()) {
      const xs = results[i]!;
      const m = median(xs);
      // the ratio of each round's two transfers, then their median: a busy moment hits both of a round alike
      const ratio = p.base === undefined ? '' : median(xs.map((x, k) => x / results[p.base!]![k]!)).toFixed(2);
      const f = (x: number) => x.toFixed(p.unit === 'MB/s' ? 0 : 1);
      console.log(`${p.name.padEnd(24)} ${f(m).padStart(8)} ${p.unit.padEnd(6)} ${`${f(Math.min(...xs))}-${f(Math.max(...xs))}`.padStart(11)}  ${ratio.padStart(5)}  ${(p.base === undefined ? '' : paths[p.base]!.name).padEnd(20)}  ${p.how}`);
    }
  } finally {
    await stopOnce();
  }
  // What this bench made must be gone. The shared part (baj0, forwarding, NAT) stays while another jail, started
  // by someone else during the run, still uses it: its last jail out removes it.
  const others = readLeases().filter((l) => isLive(l) && !l.jail.startsWith(`${PREFIX}-bench-`));
  const mine = (l: string) => l === WORLD.veth || (others.length === 0 && (l === BRIDGE || /^bajh\d+$/.test(l))) || l === bridgedVeth;
  const left = readdirSync('/sys/class/net').filter(mine);
  const rules = spawnSync('iptables-save', { encoding: 'utf8' }).stdout.split('\n').filter((l) => (others.length === 0 && /--comment "?baj0-/.test(l)) || /--comment "?baj-bench-/.test(l));
  if (others.length === 0 && readSys('/proc/sys/net/ipv4/ip_forward') !== ipForward) left.push(`net.ipv4.ip_forward=${readSys('/proc/sys/net/ipv4/ip_forward')} (was ${ipForward})`);
  if (left.length || rules.length) throw new JailError(`left behind: ${[...left, ...rules].join(', ')}`, 'sudo npm run clean removes it');
  if (others.length) {
    console.log(`\nThe bench's jails and the world with ${WORLD.veth} are gone; ${BRIDGE} stays: ${others.map((l) => `${l.jail} (${l.ip})`).join(', ')} started meanwhile and still use${others.length === 1 ? 's' : ''} it.`);
  } else {
    console.log(`\nAll stopped: the jails, the bridge and their veths, the rules, the leases, and the world with ${WORLD.veth}.`);
  }
  return 0;
});
