// Step 05's claim, measured: "host mode is faster, because nothing is
// forwarded". One TCP stream of --mb megabytes, timed end to end, over four
// paths side by side in one run, round-robin so that a busy machine slows
// every path alike:
//
//   loopback     host mode: both ends in the host's network namespace, 127.0.0.1
//   jail->host   a bridged jail to the host: veth, bridge, the host's own 10.231.0.1
//   jail->jail   two bridged jails: veth, bridge, veth
//   proxy        the host's 127.0.0.1 to a published port: the launcher's userland proxy, then the bridge
//
// The jails are real (bin/step.mjs 5). The sender and the receiver are a
// few lines of Node run in a jail's network namespace with `nsenter -n`: the
// busybox rootfs has no Node, and only the network namespace decides which
// path a packet takes. Traffic stays on this machine: loopback and the
// jails' own addresses. Everything is stopped and cleaned up at the end.
//   sudo node --import tsx bench/05-network.ts [--mb 200] [--runs 5]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, rootfsOrDefault, usage } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { requireRoot } from '../lib/preflight.ts';
import { requireRootfs } from '../steps/01-rootfs/rootfs.ts';
import { BRIDGE, jailSubnet } from '../steps/05-network-bridge/addresses.ts';
import { median } from './measure.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const flags = {
  mb: { type: 'string', value: 'N', help: 'megabytes (10^6 bytes) per transfer', default: '200' },
  runs: { type: 'string', value: 'N', help: 'transfers per path', default: '5' },
} as const;

/** Counts what arrives on each connection, answers the count when the sender is done. */
const SINK = `
const net = require('net');
net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (d) => (n += d.length));
  s.on('end', () => s.end(n + '\\n'));
}).listen(+process.argv[2], process.argv[1], () => console.log('ready'));
`;

/** Sends N bytes, then waits for the sink's count: the clock stops when the last byte has arrived. */
const SOURCE = `
const net = require('net');
const total = +process.argv[3] * 1e6;
const chunk = Buffer.alloc(256 * 1024, 120);
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

const children = new Set<ChildProcess>();

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

interface Jail {
  launcher: ChildProcess;
  init: number;
  ip?: string;
}

function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** A jail that only holds its network; setpriv --pdeathsig: if this bench dies, the launcher is told to stop and clean up. */
async function startJail(name: string, args: string[]): Promise<Jail> {
  const launcher = spawn('setpriv', ['--pdeathsig', 'TERM', '--', process.execPath, 'bin/step.mjs', '5', '--name', name, ...args, '--', 'sh', '-c', 'ip -4 -o addr show dev eth0 2>/dev/null; echo ready; exec sleep 3600'], {
    cwd: repo,
    env: { ...process.env, JAIL_QUIET: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(launcher);
  const out = await waitForLine(launcher, `jail ${name}`, (o) => o.includes('ready'));
  // launcher (setpriv became node) -> unshare -> the init
  const init = childrenOf(launcher.pid!)
    .flatMap(childrenOf)
    .find((pid) => /^NSpid:\s+\d+\s+1$/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')));
  if (!init) throw new Error(`jail ${name}: no init found`);
  return { launcher, init, ip: /inet (\S+)\//.exec(out)?.[1] };
}

/** Runs a Node script in the network namespace of `pid` (or the host's, with no pid). */
function nodeIn(pid: number | undefined, script: string, args: string[]): ChildProcess {
  const argv = [process.execPath, '-e', script, ...args];
  const child = pid ? spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'nsenter', '-t', String(pid), '-n', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function sink(pid: number | undefined, host: string, port: number): Promise<void> {
  await waitForLine(nodeIn(pid, SINK, [host, String(port)]), `the receiver on ${host}:${port}`, (o) => o.includes('ready'));
}

async function transfer(pid: number | undefined, host: string, port: number, mb: number): Promise<number> {
  const out = await waitForLine(nodeIn(pid, SOURCE, [host, String(port), String(mb)]), `a transfer to ${host}:${port}`, (o) => o.includes('}'), 120_000);
  const { bytes, ms } = JSON.parse(out) as { bytes: number; ms: number };
  if (bytes !== mb * 1e6) throw new Error(`${host}:${port} received ${bytes} of ${mb * 1e6} bytes`);
  return bytes / 1e6 / (ms / 1000); // MB/s
}

async function stopAll(): Promise<void> {
  const exits = [...children].map((c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))));
  for (const c of children) c.kill('SIGTERM'); // a launcher unwinds: veth, lease, rules, and the bridge with the last jail
  await Promise.all(exits);
  children.clear();
}

await runMain(async () => {
  const args = parseArgs(process.argv.slice(2), flags);
  if (args.help) {
    console.log(usage('TCP throughput: host mode (loopback) against the bridge and the userland proxy.', 'sudo node --import tsx bench/05-network.ts [--mb N] [--runs N]', flags));
    return 0;
  }
  const mb = Number(args.flags.mb);
  const runs = Number(args.flags.runs);
  if (!(mb > 0) || !(runs > 0)) throw new JailError('--mb and --runs take positive numbers', undefined, 2);
  requireRoot('the network benchmark');
  requireRootfs(rootfsOrDefault(undefined));
  if (existsSync(`/sys/class/net/${BRIDGE}`)) throw new JailError(`${BRIDGE} exists: other jails are running`, 'stop them (or sudo npm run clean) so that they do not share the bridge with the benchmark');
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void stopAll().then(() => process.exit(130)));

  const gateway = jailSubnet().gateway;
  console.log(`Starting jails: two on ${BRIDGE} (one publishing 23390:5001), one in host mode …`);
  try {
    const [a, b, h] = await Promise.all([startJail('bench-a', ['--publish', '23390:5001']), startJail('bench-b', []), startJail('bench-host', ['--net', 'host'])]);
    await Promise.all([sink(h.init, '127.0.0.1', 5000), sink(undefined, gateway, 5002), sink(a.init, '0.0.0.0', 5001)]);
    const paths: { name: string; how: string; go: () => Promise<number> }[] = [
      { name: 'loopback (host mode)', how: 'host netns, 127.0.0.1', go: () => transfer(h.init, '127.0.0.1', 5000, mb) },
      { name: 'jail -> host', how: `${b.ip} -> ${gateway} over ${BRIDGE}`, go: () => transfer(b.init, gateway, 5002, mb) },
      { name: 'jail -> jail', how: `${b.ip} -> ${a.ip} over ${BRIDGE}`, go: () => transfer(b.init, a.ip!, 5001, mb) },
      { name: 'host -> published port', how: `127.0.0.1:23390 -> proxy -> ${a.ip}:5001`, go: () => transfer(undefined, '127.0.0.1', 23390, mb) },
    ];
    console.log(`${runs} × ${mb} MB per path, round-robin, on ${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)!.length} CPUs …`);
    await paths[0]!.go(); // warm-up: JIT, page cache, neighbour tables
    const results = paths.map(() => [] as number[]);
    for (let r = 0; r < runs; r++) {
      for (const [i, p] of paths.entries()) results[i]!.push(await p.go());
    }
    const base = median(results[0]!);
    console.log('');
    console.log(`${'path'.padEnd(24)} ${'median MB/s'.padStart(11)} ${'min-max'.padStart(13)}  ${'vs loopback'.padStart(11)}  route`);
    for (const [i, p] of paths.entries()) {
      const xs = results[i]!;
      const m = median(xs);
      console.log(`${p.name.padEnd(24)} ${m.toFixed(0).padStart(11)} ${`${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`.padStart(13)}  ${(m / base).toFixed(2).padStart(11)}  ${p.how}`);
    }
  } finally {
    await stopAll();
  }
  const left = ['', ...readdirSync('/sys/class/net')].filter((l) => l.startsWith('baj'));
  if (left.length) throw new JailError(`left behind: ${left.join(', ')}`, 'sudo npm run clean removes it');
  console.log('\nAll jails stopped; the bridge, veths, rules and leases are gone.');
  return 0;
});
