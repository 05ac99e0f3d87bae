// Step 05's network module on its own, before the launcher exists: the
// "jails" are stand-ins, `unshare --net sleep` processes with a network
// namespace of their own. Traffic goes only to loopback and to namespaces
// this file makes; "the outside world" is a test-made namespace reachable
// only through the host (198.51.100.0/24, a documentation range).
//   node --import tsx test/network-module.check.ts
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { CleanupStack } from '../lib/cleanup.ts';
import { JailError } from '../lib/errors.ts';
import type { JailSpec } from '../lib/spec.ts';
import { runDir } from '../lib/state.ts';
import {
  checkJailAddress,
  cleanNetwork,
  drawTopology,
  jailSubnet,
  networkHook,
  networkNamespaces,
  parseNetworkMode,
  parsePublish,
  parseSubnet,
  upstreamResolvConf,
  type NetworkHook,
  type NetworkOptions,
} from '../steps/05-network-bridge/network.ts';
import { assertHostUnchanged, hostState, repo, rootSuite, sh, waitFor, type HostState } from './helpers.ts';

process.env.JAIL_QUIET ??= '1';
delete process.env.JAIL_SUBNET;

const test = rootSuite('05 network module');
const GATEWAY = '10.231.0.1';
const WORLD = { ns: 'baj-test-world', path: '/run/netns/baj-test-world', veth: 'bajtw0', host: '198.51.100.1', addr: '198.51.100.2' };

// ---------------------------------------------------------------------------
// Stand-in jails and probes

interface Jail {
  spec: JailSpec;
  hook: NetworkHook;
  stack: CleanupStack;
  pid: number;
  netns: string;
  stop(): Promise<void>;
}

const running = new Set<Jail>();
const children = new Set<ChildProcess>();
const servers = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** A process alone in a new network namespace: what the launcher's init is to this module. */
async function standIn(): Promise<{ pid: number; child: ChildProcess }> {
  const child = track(spawn('unshare', ['--net', 'sleep', '600'], { stdio: 'ignore' }));
  const pid = child.pid!;
  const host = readlinkSync('/proc/self/ns/net');
  await waitFor('a stand-in with its own netns', () => readlinkSync(`/proc/${pid}/ns/net`) !== host);
  return { pid, child };
}

function makeSpec(name: string, opts: NetworkOptions): JailSpec {
  return { name, rootfs: '/nonexistent', namespaces: ['uts', 'pid', 'mount', ...networkNamespaces(opts.mode)], command: ['sh'], env: {}, pivot: true, binds: [] };
}

async function startJail(name: string, opts: NetworkOptions): Promise<Jail> {
  const spec = makeSpec(name, opts);
  const hook = networkHook(opts);
  const stack = new CleanupStack();
  const { pid, child } = opts.mode === 'host' ? { pid: process.pid, child: undefined } : await standIn();
  const jail: Jail = {
    spec,
    hook,
    stack,
    pid,
    netns: `/proc/${pid}/ns/net`,
    async stop() {
      running.delete(jail);
      if (child) await kill(child); // the jail exits first, then its launcher unwinds
      await stack.unwind();
    },
  };
  running.add(jail);
  try {
    await hook.prepare!(spec, stack);
    await hook.attach!(spec, pid, stack);
  } catch (err) {
    await jail.stop();
    throw err;
  }
  return jail;
}

const SERVER = `require('net').createServer((s) => s.end(s.remoteAddress.replace(/^::ffff:/, '') + '\\n')).listen(+process.argv[1], '0.0.0.0', () => console.log('ready'))`;

/** A TCP server in a network namespace that answers each client with the client's address as it sees it. */
async function serveIn(netns: string, port: number): Promise<ChildProcess> {
  const child = track(spawn('nsenter', [`--net=${netns}`, process.execPath, '-e', SERVER, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] }));
  servers.add(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
    child.once('exit', (code) => reject(new Error(`server in ${netns} exited with ${code}`)));
  });
  return child;
}

const CLIENT = `const s = require('net').connect(+process.argv[2], process.argv[1]); let t = ''; s.on('data', (d) => (t += d)); s.on('end', () => process.stdout.write(t)); s.on('error', (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => { console.error('timeout'); process.exit(1); }, 4000).unref();`;

/**
 * Connects from a network namespace (or from the host when netns is undefined)
 * and returns what the server said. Asynchronous on purpose: the proxy of a
 * published port runs in this very process and must keep serving meanwhile.
 */
async function ask(netns: string | undefined, host: string, port: number): Promise<string> {
  const argv = [process.execPath, '-e', CLIENT, host, String(port)];
  const [cmd, ...args] = netns ? ['nsenter', `--net=${netns}`, ...argv] : argv;
  return new Promise((resolve, reject) => {
    execFile(cmd!, args, (err, stdout, stderr) => {
      if (err) reject(new Error(`connecting to ${host}:${port}${netns ? ` from ${netns}` : ''} failed: ${stderr.trim()}`));
      else resolve(stdout.trim());
    });
  });
}

const pings = (netns: string, ip: string): boolean => sh(`nsenter --net=${netns} ping -c1 -W2 ${ip}`).code === 0;
const linksIn = (netns: string): string[] => sh(`nsenter --net=${netns} ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1`).stdout.split('\n').filter(Boolean);

/** "The outside world": a namespace with one veth to the host, no default route, not on baj0. */
function makeWorld(): void {
  for (const cmd of [
    `ip netns add ${WORLD.ns}`,
    `ip link add ${WORLD.veth} type veth peer name eth0 netns ${WORLD.ns}`,
    `ip addr add ${WORLD.host}/24 dev ${WORLD.veth}`,
    `ip link set ${WORLD.veth} up`,
    `ip -n ${WORLD.ns} addr add ${WORLD.addr}/24 dev eth0`,
    `ip -n ${WORLD.ns} link set eth0 up`,
    `ip -n ${WORLD.ns} link set lo up`,
  ]) {
    const r = sh(cmd);
    if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
  }
}

// `ip netns add` turns /run/netns into a shared mount point on first use and
// never undoes that; remember how it was so the test can put it back.
const netnsDirBefore = { exists: existsSync('/run/netns'), mounted: isMountPoint('/run/netns') };
function isMountPoint(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

/** Its servers first: a namespace lives on, veth and all, while a process is inside. */
async function removeWorld(): Promise<void> {
  for (const server of servers) await kill(server);
  servers.clear();
  if (existsSync(WORLD.path)) sh(`ip netns del ${WORLD.ns}`); // the veth pair goes with it
  if (!existsSync('/run/netns') || readdirSync('/run/netns').length) return;
  if (!netnsDirBefore.mounted && isMountPoint('/run/netns')) sh('umount /run/netns');
  if (!netnsDirBefore.exists) rmdirSync('/run/netns');
}

/** The workshop's own state files (leases, saved host values, resolv.conf copies). */
function workshopFiles(): string[] {
  const walk = (dir: string): string[] =>
    existsSync(dir) ? readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)])) : [];
  return walk(runDir()).sort();
}

interface Snapshot {
  host: HostState;
  files: string[];
}
const snapshot = (): Snapshot => ({ host: hostState(), files: workshopFiles() });
async function assertUnchanged(before: Snapshot, context: string): Promise<void> {
  await assertHostUnchanged(before.host, context);
  assert.equal(workshopFiles(), before.files, `workshop files changed ${context}`);
}

async function failsToConnect(p: Promise<unknown>, message: string): Promise<void> {
  let failed = false;
  await p.catch(() => (failed = true));
  assert.ok(failed, message);
}

async function rejects(what: () => Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await what();
  } catch (err) {
    assert.instance(err, JailError, `expected a JailError, got ${(err as Error).stack}`);
    assert.match((err as Error).message, message);
    assert.ok((err as JailError).hint, `"${(err as Error).message}" has no hint`);
    return;
  }
  assert.unreachable(`expected a JailError matching ${message}`);
}

/** Runs prepare (and attach when it gets there) the way a launcher does, unwinding on failure. */
async function tryJail(opts: NetworkOptions, name = 'bajbad'): Promise<void> {
  await startJail(name, opts);
  assert.unreachable('the jail started');
}

let initial: Snapshot;
test.before(() => {
  initial = snapshot();
});

test.after.each(async () => {
  for (const jail of [...running]) await jail.stop();
  for (const child of [...children]) await kill(child);
  await removeWorld();
});

test.after(async () => {
  await cleanNetwork();
  await assertUnchanged(initial, 'after the whole file and cleanNetwork()');
});

// ---------------------------------------------------------------------------
// Flags and addresses: pure functions

test('flags: --publish HOSTPORT:JAILPORT and --net MODE are parsed, bad ones refused with a hint', async () => {
  assert.equal(parsePublish('23322:22'), { hostPort: 23322, jailPort: 22, proto: 'tcp' });
  assert.equal(parsePublish('8080:80/tcp'), { hostPort: 8080, jailPort: 80, proto: 'tcp' });
  for (const bad of ['23322', '0:22', '70000:22', '22:', 'a:b', '1:2:3', '53:53/udp', '']) {
    await rejects(async () => parsePublish(bad), /publish/);
  }
  assert.is(parseNetworkMode('bridge'), 'bridge');
  await rejects(async () => parseNetworkMode('bridged'), /unknown network mode 'bridged'/);
  assert.equal(networkNamespaces('none'), ['net']);
  assert.equal(networkNamespaces('bridge'), ['net']);
  assert.equal(networkNamespaces('host'), []);
});

test('addresses: the subnet comes from JAIL_SUBNET, an address must be a host of it', async () => {
  assert.is(jailSubnet().cidr, '10.231.0.0/24');
  assert.is(jailSubnet().gateway, GATEWAY);
  process.env.JAIL_SUBNET = '10.99.0.0/16';
  try {
    assert.is(jailSubnet().gateway, '10.99.0.1');
  } finally {
    delete process.env.JAIL_SUBNET;
  }
  await rejects(async () => parseSubnet('10.231.0.5/24'), /host bits/);
  await rejects(async () => parseSubnet('10.231.0.0/31'), /not a usable/);
  const s = jailSubnet();
  assert.is(checkJailAddress('10.231.0.7', s), '10.231.0.7');
  for (const [ip, why] of [['10.232.0.7', /outside/], ['10.231.0.1', /gateway/], ['10.231.0.0', /network address/], ['10.231.0.255', /broadcast/], ['10.231.0.300', /not an IPv4/]] as const) {
    await rejects(async () => checkJailAddress(ip, s), why);
  }
});

test("DNS: the jail gets the host's upstream servers, never a loopback stub", () => {
  const dir = mkdtempSync(join(tmpdir(), 'baj-resolv-'));
  try {
    const etc = join(dir, 'resolv.conf');
    const resolved = join(dir, 'resolved.conf');
    writeFileSync(etc, 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n');
    writeFileSync(resolved, 'nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 127.0.0.1\nsearch lan\n');
    const r = upstreamResolvConf(etc, resolved);
    assert.equal(r.servers, ['192.0.2.53']);
    assert.is(r.source, resolved);
    assert.match(r.text, /^nameserver 192\.0\.2\.53$/m);
    assert.match(r.text, /^search lan$/m);
    assert.not.match(r.text, /nameserver 127\./);
    writeFileSync(etc, 'nameserver 198.51.100.53\n');
    assert.equal(upstreamResolvConf(etc, resolved).servers, ['198.51.100.53']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// The three modes, against the real kernel

test('none: the jail has only lo, and it is up', async () => {
  const before = snapshot();
  const jail = await startJail('bajnone', { mode: 'none', publish: [] });
  assert.equal(linksIn(jail.netns), ['lo']);
  assert.ok(pings(jail.netns, '127.0.0.1'), 'lo answers inside');
  assert.equal(jail.spec.binds, []);
  assert.match(jail.hook.topology(), /lo +127\.0\.0\.1/);
  await jail.stop();
  await assertUnchanged(before, 'after a none jail');
});

test("host: no namespace of its own, the host's interfaces, the host's resolv.conf", async () => {
  const before = snapshot();
  const jail = await startJail('bajhost', { mode: 'host', publish: [] });
  assert.ok(!jail.spec.namespaces.includes('net'));
  assert.equal(jail.spec.binds, [{ source: '/etc/resolv.conf', target: '/etc/resolv.conf', readonly: true }]);
  assert.equal(jail.hook.network?.hostLinks.sort(), before.host.links);
  await jail.stop();
  await assertUnchanged(before, 'after a host jail');
});

test('bridge: two jails at once have their own addresses, ping each other and the gateway, and talk TCP', async () => {
  const before = snapshot();
  const a = await startJail('baja', { mode: 'bridge', publish: [] });
  const b = await startJail('bajb', { mode: 'bridge', publish: [] });
  assert.is(a.hook.address, '10.231.0.2');
  assert.is(b.hook.address, '10.231.0.3');
  assert.equal(linksIn(a.netns), ['lo', 'eth0']);
  assert.match(sh(`nsenter --net=${a.netns} ip -4 -o addr show dev eth0`).stdout, /inet 10\.231\.0\.2\/24/);
  assert.match(sh(`nsenter --net=${b.netns} ip route show default`).stdout, /default via 10\.231\.0\.1 dev eth0/);
  assert.match(sh('ip -o link show master baj0').stdout, /bajh2.*bajh3/s);
  assert.ok(pings(a.netns, '10.231.0.3'), 'a pings b');
  assert.ok(pings(b.netns, '10.231.0.2'), 'b pings a');
  assert.ok(pings(a.netns, GATEWAY), 'a pings the gateway');
  await serveIn(a.netns, 7000);
  assert.is(await ask(b.netns, '10.231.0.2', 7000), '10.231.0.3', 'a sees b by its own address: no NAT between jails');

  const resolv = a.spec.binds.find((m) => m.target === '/etc/resolv.conf');
  assert.ok(resolv?.readonly && resolv.source.startsWith(runDir()), 'resolv.conf is bound from the run dir');
  assert.not.match(readFileSync(resolv!.source, 'utf8'), /nameserver 127\./);
  const picture = b.hook.topology();
  for (const want of ['baj0', '10.231.0.1/24', 'bajh3', '10.231.0.3/24', 'bajh2 (10.231.0.2)', `pid ${b.pid}`]) assert.ok(picture.includes(want), `topology shows ${want}:\n${picture}`);

  await a.stop();
  assert.ok(existsSync('/sys/class/net/baj0'), 'the bridge stays while b runs');
  assert.ok(pings(b.netns, GATEWAY), 'b still reaches the gateway');
  await b.stop();
  await assertUnchanged(before, 'after the last bridged jail left');
});

test('bridge: JAIL_SUBNET moves the bridge and the jails to another subnet', async () => {
  const before = snapshot();
  process.env.JAIL_SUBNET = '10.232.5.0/28';
  try {
    const a = await startJail('bajsub', { mode: 'bridge', publish: [] });
    assert.is(a.hook.address, '10.232.5.2');
    assert.match(sh('ip -4 -o addr show dev baj0').stdout, /inet 10\.232\.5\.1\/28/);
    assert.ok(pings(a.netns, '10.232.5.1'), 'the jail pings its gateway');
    await a.stop();
  } finally {
    delete process.env.JAIL_SUBNET;
  }
  await assertUnchanged(before, 'after a jail on another subnet');
});

test("NAT: a jail reaches a test-made 'outside world' with the host's address as its source, even behind FORWARD DROP", async () => {
  const before = snapshot();
  makeWorld();
  const a = await startJail('bajnat', { mode: 'bridge', publish: [] });
  await serveIn(WORLD.path, 7001);
  assert.is(await ask(a.netns, WORLD.addr, 7001), WORLD.host, 'the world sees the host, not 10.231.0.2');
  assert.not.ok(pings(WORLD.path, a.hook.address!), 'the world has no route to the jail subnet: only NAT brings the answer back');
  const policy = sh('iptables -S FORWARD').stdout.match(/^-P FORWARD (\w+)/m)![1]!;
  sh('iptables -P FORWARD DROP'); // what Docker does to a host
  try {
    assert.is(await ask(a.netns, WORLD.addr, 7001), WORLD.host, 'the FORWARD accepts for baj0 still let it out');
  } finally {
    sh(`iptables -P FORWARD ${policy}`);
  }
  await a.stop();
  await removeWorld();
  await assertUnchanged(before, 'after the NAT test');
});

test('publish: the jail port answers on the host port from 127.0.0.1 (proxy) and from another namespace (DNAT)', async () => {
  const before = snapshot();
  makeWorld();
  const a = await startJail('bajpub', { mode: 'bridge', publish: [parsePublish('23399:2222')] });
  const b = await startJail('bajpeer', { mode: 'bridge', publish: [] });
  await serveIn(a.netns, 2222);
  assert.is(await ask(undefined, '127.0.0.1', 23399), GATEWAY, "from the host's loopback: the proxy connects from the gateway");
  assert.is(await ask(WORLD.path, WORLD.host, 23399), WORLD.addr, 'from another namespace: DNAT keeps the real client address');
  assert.is(await ask(b.netns, GATEWAY, 23399), GATEWAY, 'from another jail, via the host: the proxy');
  const policy = sh('iptables -S FORWARD').stdout.match(/^-P FORWARD (\w+)/m)![1]!;
  sh('iptables -P FORWARD DROP');
  try {
    assert.is(await ask(WORLD.path, WORLD.host, 23399), WORLD.addr, 'ctstate DNAT lets the published port through a DROP policy');
    sh(`ip -n ${WORLD.ns} route add 10.231.0.0/24 via ${WORLD.host}`); // a world that knows the way, and tries the jail directly
    await failsToConnect(ask(WORLD.path, a.hook.address!, 2222), 'but with a DROP policy nothing unpublished gets in');
  } finally {
    sh(`iptables -P FORWARD ${policy}`);
  }
  assert.match(a.hook.topology(), /tcp \*:23399 -> 10\.231\.0\.2:2222/);
  await b.stop();
  await a.stop();
  await failsToConnect(ask(undefined, '127.0.0.1', 23399), 'with the jail gone, nothing listens on the host port');
  await removeWorld();
  await assertUnchanged(before, 'after the publish test');
});

// ---------------------------------------------------------------------------
// Bad input: a clear message, nothing half-made

test('bad input is refused with a hint and leaves the host as it was', async () => {
  const before = snapshot();
  await rejects(() => tryJail({ mode: 'bridge', ip: '10.232.0.9', publish: [] }), /outside the jail subnet/);
  await rejects(() => tryJail({ mode: 'bridged' as never, publish: [] }), /unknown network mode/);
  await rejects(() => tryJail({ mode: 'host', publish: [parsePublish('23399:22')] }), /--publish needs --net bridge/);
  await rejects(() => tryJail({ mode: 'none', ip: '10.231.0.9', publish: [] }), /--ip needs --net bridge/);
  await rejects(() => tryJail({ mode: 'bridge', publish: [parsePublish('23399:22'), parsePublish('23399:80')] }), /published twice/);
  makeWorld();
  await rejects(() => tryJail({ mode: 'bridge', subnet: '198.51.100.0/25', publish: [] }), /overlaps the host's route to 198\.51\.100\.0\/24/);
  await removeWorld();
  for (const host of ['127.0.0.1', '0.0.0.0']) {
    const taken: Server = await new Promise((r) => {
      const s = createServer().listen(23398, host, () => r(s));
    });
    try {
      await rejects(() => tryJail({ mode: 'bridge', publish: [parsePublish('23398:22')] }), /host port 23398 is already taken/);
    } finally {
      await new Promise((r) => taken.close(r));
    }
  }
  await assertUnchanged(before, 'after refused jails');

  const a = await startJail('bajheld', { mode: 'bridge', ip: '10.231.0.9', publish: [] });
  const whileRunning = snapshot();
  await rejects(() => tryJail({ mode: 'bridge', ip: '10.231.0.9', publish: [] }), /10\.231\.0\.9 is already in use by jail bajheld/);
  await rejects(() => tryJail({ mode: 'bridge', subnet: '10.232.0.0/24', publish: [] }), /baj0 already serves 10\.231\.0\.1\/24/);
  await assertUnchanged(whileRunning, 'after refused jails next to a running one');
  await a.stop();

  const spec = makeSpec('bajself', { mode: 'none', publish: [] });
  const stack = new CleanupStack();
  await rejects(() => networkHook({ mode: 'none', publish: [] }).attach!(spec, process.pid, stack), /shares the host's network namespace/);
  await stack.unwind();
  await assertUnchanged(before, 'after all refused jails');
});

// ---------------------------------------------------------------------------
// Leases across processes, killed launchers, npm run clean

const LAUNCHER = (netnsPid: string, publish: string) => `
import { CleanupStack } from '${repo}lib/cleanup.ts';
import { networkHook } from '${repo}steps/05-network-bridge/network.ts';
const spec = { name: 'bajp' + process.pid, rootfs: '/', namespaces: ['net'], command: [], env: {}, pivot: true, binds: [] };
const stack = new CleanupStack();
const hook = networkHook({ mode: 'bridge', publish: ${publish} });
await hook.prepare(spec, stack);
if (${netnsPid}) await hook.attach(spec, ${netnsPid}, stack);
console.log('leased ' + hook.address);
process.stdin.resume();
process.stdin.on('end', async () => { await stack.unwind(); process.exit(0); });
`;

/** Another launcher process: prepares (and attaches to pid, if given), prints its address, and holds it until stdin closes. */
async function launcher(pid = 0, publish = '[]'): Promise<{ child: ChildProcess; address: string }> {
  const child = track(spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', LAUNCHER(String(pid), publish)], { cwd: repo, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, JAIL_QUIET: '1' } }));
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /leased (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`launcher exited with ${code}: ${err}`)));
  });
  return { child, address };
}

const finish = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.stdin!.end();
  });

test('leases: launchers racing in parallel processes get different addresses, and the last one out restores the host', async () => {
  const before = snapshot();
  const launchers = await Promise.all([1, 2, 3, 4, 5].map(() => launcher()));
  const addresses = launchers.map((l) => l.address).sort();
  assert.equal(addresses, ['10.231.0.2', '10.231.0.3', '10.231.0.4', '10.231.0.5', '10.231.0.6']);
  assert.is(readdirSync(join(runDir(), 'leases')).length, 5);
  assert.is(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), '1');
  await Promise.all(launchers.map((l) => finish(l.child)));
  await assertUnchanged(before, 'after five launchers left');
});

test("leases: a killed launcher's address is reclaimed", async () => {
  const before = snapshot();
  const dead = join(runDir(), 'leases', '10.231.0.2');
  // our own pid with a wrong start time: a new process that inherited a dead launcher's pid
  writeFileSync(dead, JSON.stringify({ pid: process.pid, started: 1, jail: 'bajgone', veth: 'bajh2' }) + '\n');
  const a = await startJail('bajnew', { mode: 'bridge', publish: [] });
  assert.is(a.hook.address, '10.231.0.2');
  assert.match(readFileSync(dead, 'utf8'), /"jail":"bajnew"/);
  await a.stop();
  await assertUnchanged(before, 'after reclaiming a lease');
});

test('cleanNetwork(): after a launcher is killed with SIGKILL, everything it left goes, and a second run finds nothing', async () => {
  const before = snapshot();
  const { pid, child: jail } = await standIn();
  const { child, address } = await launcher(pid, JSON.stringify([parsePublish('23397:22')]));
  assert.is(address, '10.231.0.2');
  await kill(child);
  const left = hostState();
  assert.ok(left.links.includes('baj0') && left.links.includes('bajh2'), 'bridge and veth were left behind');
  assert.ok(left.iptables.some((l) => l.includes('-publish-23397')), 'the DNAT rule was left behind');
  await cleanNetwork();
  await kill(jail);
  await assertUnchanged(before, 'after cleanNetwork()');
  await cleanNetwork();
  await assertUnchanged(before, 'after a second cleanNetwork()');
});

test('cleanNetwork(): a running jail keeps its network, only the leftovers go', async () => {
  const before = snapshot();
  const a = await startJail('bajlive', { mode: 'bridge', publish: [parsePublish('23396:22')] });
  const whileRunning = snapshot();
  writeFileSync(join(runDir(), 'leases', '10.231.0.77'), JSON.stringify({ pid: process.pid, started: 1, jail: 'bajdead', veth: 'bajh77' }) + '\n');
  writeFileSync(join(runDir(), 'bajdead.resolv.conf'), 'nameserver 192.0.2.53\n');
  sh('ip link add bajh77 type veth peer name bajj77');
  sh(`iptables -t nat -I PREROUTING -p tcp --dport 23395 -m comment --comment bajdead-publish-23395 -j DNAT --to-destination 10.231.0.77:22`);
  await cleanNetwork();
  await assertUnchanged(whileRunning, 'after cleanNetwork() next to a running jail');
  assert.ok(pings(a.netns, GATEWAY), 'the running jail still reaches its gateway');
  await a.stop();
  await assertUnchanged(before, 'after the running jail left');
});

test('topology: drawTopology() names the real pieces', () => {
  const picture = drawTopology({
    jail: 'bajdemo',
    pid: 4242,
    mode: 'bridge',
    publish: [parsePublish('23322:22')],
    hostLinks: [],
    bridge: { name: 'baj0', subnet: '10.231.0.0/24', gateway: GATEWAY, prefix: 24, ip: '10.231.0.2', hostVeth: 'bajh2', neighbours: [], uplink: { dev: 'eth0', address: '192.0.2.2' } },
  });
  for (const want of ['eth0 192.0.2.2', 'MASQUERADE -s 10.231.0.0/24 ! -o baj0', 'baj0   bridge   10.231.0.1/24', 'bajh2', '10.231.0.2/24', 'pid 4242', '*:23322 -> 10.231.0.2:22']) {
    assert.ok(picture.includes(want), `missing ${want}:\n${picture}`);
  }
});

test.run();
