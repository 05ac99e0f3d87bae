// Step 05, the visiting room: how a jail talks to the world. Three modes.
//
//   none    a network namespace of its own with only `lo`: nothing in, nothing out
//   host    no network namespace: the jail uses the host's interfaces and ports
//   bridge  a namespace of its own plus one end of a veth pair; the other end is
//           a port of the workshop bridge baj0, and the host routes and NATs for it
//
// Everything here is done with `ip` and `iptables`, the tools a learner can type
// too, and each command is shown before it runs. What one jail makes is undone
// by that jail's cleanup stack; what all jails share (the bridge, forwarding,
// the NAT rules) is counted by address leases and taken down by the last jail.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import koffi from 'koffi';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { requireRoot, requireTools, which } from '../../lib/preflight.ts';
import { $, run, succeeds } from '../../lib/sh.ts';
import type { JailHook, JailSpec, Namespace } from '../../lib/spec.ts';
import { ensureDir, PREFIX, runDir } from '../../lib/state.ts';

// ---------------------------------------------------------------------------
// The modes and the flags

export type NetworkMode = 'none' | 'host' | 'bridge';
export const networkModes: readonly NetworkMode[] = ['none', 'host', 'bridge'];

export interface PortMapping {
  hostPort: number;
  jailPort: number;
  proto: 'tcp';
}

export function parseNetworkMode(s: string): NetworkMode {
  if ((networkModes as readonly string[]).includes(s)) return s as NetworkMode;
  throw new JailError(`unknown network mode '${s}'`, "use --net none (only lo), --net host (the host's network) or --net bridge (an address of its own on baj0)", 2);
}

const isPort = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 65535;

/** "23322:22" (or "23322:22/tcp"): the host's port 23322 leads to the jail's port 22. */
export function parsePublish(s: string): PortMapping {
  const m = /^(\d{1,5}):(\d{1,5})(?:\/(\w+))?$/.exec(s.trim());
  const hostPort = Number(m?.[1]);
  const jailPort = Number(m?.[2]);
  if (!m || !isPort(hostPort) || !isPort(jailPort)) {
    throw new JailError(`--publish '${s}' is not HOSTPORT:JAILPORT`, "e.g. --publish 23322:22 makes the jail's port 22 reachable on the host's port 23322 (ports 1-65535)", 2);
  }
  if (m[3] !== undefined && m[3] !== 'tcp') {
    throw new JailError(`--publish '${s}': only tcp can be published`, 'the host side of a published port is a TCP proxy; drop the /' + m[3], 2);
  }
  return { hostPort, jailPort, proto: 'tcp' };
}

/** The namespaces a mode adds to the clone flags: host mode shares the host's network, so none. */
export function networkNamespaces(mode: NetworkMode): Namespace[] {
  return mode === 'host' ? [] : ['net'];
}

// ---------------------------------------------------------------------------
// Names and addresses

/** The workshop's one bridge, Docker's docker0: made by the first bridged jail, removed by the last. */
export const BRIDGE = `${PREFIX}0`;
/** 10.231/16 is rarely used by home routers, VPNs or Docker (172.17/16); JAIL_SUBNET overrides it. */
export const DEFAULT_SUBNET = '10.231.0.0/24';

export interface Subnet {
  cidr: string;
  network: number;
  prefix: number;
  /** .1, the bridge's own address: the jails' default route. */
  gateway: string;
}

export function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const [a, b, c, d] = m.slice(1).map(Number) as [number, number, number, number];
  if ([a, b, c, d].some((o) => o > 255)) return undefined;
  return a * 2 ** 24 + b * 2 ** 16 + c * 2 ** 8 + d;
}

export const formatIPv4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
const maskOf = (prefix: number): number => (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0);
const sizeOf = (s: Subnet): number => 2 ** (32 - s.prefix);

export function parseSubnet(cidr: string): Subnet {
  const [addr = '', len = ''] = cidr.split('/');
  const network = parseIPv4(addr);
  const prefix = Number(len);
  if (network === undefined || !/^\d+$/.test(len) || prefix < 8 || prefix > 30) {
    throw new JailError(`'${cidr}' is not a usable jail subnet`, `give an IPv4 network with a prefix from /8 to /30, e.g. JAIL_SUBNET=${DEFAULT_SUBNET}`, 2);
  }
  const base = (network & maskOf(prefix)) >>> 0;
  if (base !== network) {
    throw new JailError(`'${cidr}' has host bits set`, `did you mean ${formatIPv4(base)}/${prefix}?`, 2);
  }
  return { cidr: `${formatIPv4(network)}/${prefix}`, network, prefix, gateway: formatIPv4(network + 1) };
}

/** opts.subnet, else JAIL_SUBNET, else the default. */
export function jailSubnet(override?: string): Subnet {
  return parseSubnet(override ?? process.env.JAIL_SUBNET ?? DEFAULT_SUBNET);
}

/** An address a jail may have: inside the subnet, not the network, the gateway or the broadcast address. */
export function checkJailAddress(ip: string, subnet: Subnet): string {
  const n = parseIPv4(ip);
  const first = formatIPv4(subnet.network + 2);
  const last = formatIPv4(subnet.network + sizeOf(subnet) - 2);
  const hint = `pick one from ${first} to ${last}, or leave --ip out to get the next free one`;
  if (n === undefined) throw new JailError(`--ip '${ip}' is not an IPv4 address`, hint, 2);
  const i = n - subnet.network;
  if (i < 0 || i >= sizeOf(subnet)) throw new JailError(`${ip} is outside the jail subnet ${subnet.cidr}`, hint, 2);
  if (i === 0 || i === sizeOf(subnet) - 1) throw new JailError(`${ip} is the ${i ? 'broadcast' : 'network'} address of ${subnet.cidr}`, hint, 2);
  if (i === 1) throw new JailError(`${ip} is the gateway: ${BRIDGE}'s own address`, hint, 2);
  return formatIPv4(n); // 10.231.0.07 and 10.231.0.7 are one address and must be one lease
}

/** Interface names have at most 15 characters; the address's index in the subnet keeps them short and unique. */
export function vethNames(subnet: Subnet, ip: string): { host: string; jail: string } {
  const i = parseIPv4(ip)! - subnet.network;
  return { host: `${PREFIX}h${i}`, jail: `${PREFIX}j${i}` };
}

const ourVeth = new RegExp(`^${PREFIX}h\\d+$`);

// ---------------------------------------------------------------------------
// Shell commands, shown before they run

const quote = (a: string): string => (/^[\w@%+=:,./!-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
const cleanHint = 'sudo npm run clean removes half-made network pieces; then try again';

async function ip(...args: string[]): Promise<string> {
  showCommand(['ip', ...args].map(quote).join(' '));
  return run(['ip', ...args], cleanHint);
}

/** nsenter -n enters only the jail's network namespace: the host's `ip` binary works on the jail's interfaces. */
async function ipInJail(pid: number, ...args: string[]): Promise<string> {
  showCommand(['nsenter', '-t', String(pid), '-n', 'ip', ...args].map(quote).join(' '));
  return run(['nsenter', '-t', String(pid), '-n', 'ip', ...args], cleanHint);
}

async function iptables(...args: string[]): Promise<string> {
  showCommand(['iptables', ...args].map(quote).join(' '));
  return run(['iptables', '-w', ...args], cleanHint);
}

async function ipJson<T>(...args: string[]): Promise<T> {
  const out = await $`ip -j ${args}`.nothrow();
  return JSON.parse(out.exitCode === 0 && out.stdout.trim() ? out.stdout : '[]') as T;
}

const linkExists = (name: string): Promise<boolean> => succeeds(['ip', 'link', 'show', 'dev', name]);

async function deleteLink(name: string): Promise<void> {
  if (!(await linkExists(name))) return;
  try {
    await ip('link', 'del', name);
  } catch (err) {
    if (await linkExists(name)) throw err; // else the kernel beat us to it: a veth goes when its namespace dies
  }
}

/** nsenter into the host's own namespace would rename the host's interfaces and replace its default route. */
function checkOwnNetns(pid: number): void {
  let theirs: string;
  try {
    theirs = readlinkNs(pid);
  } catch {
    throw new JailError(`jail process ${pid} is gone before its network was set up`, 'see the jail\'s output above for why it stopped');
  }
  if (theirs === readlinkNs('self')) {
    throw new JailError(`process ${pid} shares the host's network namespace`, 'a jail with --net none or bridge needs the net namespace: add networkNamespaces(mode) to spec.namespaces');
  }
}
const readlinkNs = (pid: number | 'self'): string => readlinkSync(`/proc/${pid}/ns/net`);

// ---------------------------------------------------------------------------
// Leases: which jail has which address, across processes.
//
// A lease is the file ${runDir()}/leases/<address>, created with O_EXCL ('wx')
// so that two launchers can never both create it, holding the launcher's pid
// and start time as JSON. A lease whose launcher is gone is stale and may be
// taken again: the start time tells a live launcher from a new process that
// got the same pid (runDir survives reboots). Everything that changes leases
// or the shared network holds the lock on the leases directory.

export interface Lease {
  ip: string;
  /** The launcher that holds it. */
  pid: number;
  /** Its start time in clock ticks after boot, field 22 of /proc/PID/stat. */
  started: number;
  jail: string;
  /** The host end of the jail's veth pair. */
  veth: string;
}

const leaseDir = (): string => ensureDir(join(runDir(), 'leases'));

function processStart(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]); // comm may hold spaces and ')'
  } catch {
    return undefined;
  }
}

export const isLive = (lease: Lease): boolean => lease.pid > 0 && processStart(lease.pid) === lease.started;

function readLease(ip: string): Lease | undefined {
  let text: string;
  try {
    text = readFileSync(join(leaseDir(), ip), 'utf8');
  } catch {
    return undefined;
  }
  try {
    return { ...(JSON.parse(text) as Lease), ip };
  } catch {
    return { ip, pid: 0, started: 0, jail: '?', veth: '' }; // unreadable: nobody can prove it alive
  }
}

export function readLeases(): Lease[] {
  return readdirSync(leaseDir())
    .filter((f) => parseIPv4(f) !== undefined)
    .map(readLease)
    .filter((l): l is Lease => l !== undefined);
}

function inUse(lease: Lease): JailError {
  return new JailError(`${lease.ip} is already in use by jail ${lease.jail} (launcher pid ${lease.pid})`, 'pick another --ip, or leave it out to get the next free address', 2);
}

function* candidates(subnet: Subnet, wanted: string | undefined): Generator<number> {
  if (wanted) return yield parseIPv4(wanted)!;
  for (let n = subnet.network + 2; n < subnet.network + sizeOf(subnet) - 1; n++) yield n;
}

/** Takes `wanted`, or the lowest free address; call under the network lock. */
function takeLease(subnet: Subnet, wanted: string | undefined, jail: string): Lease {
  for (const n of candidates(subnet, wanted)) {
    const ip = formatIPv4(n);
    const held = readLease(ip);
    if (held && isLive(held)) {
      if (wanted) throw inUse(held);
      continue;
    }
    if (held) {
      explain(`reclaiming ${ip}: its launcher (pid ${held.pid}, jail ${held.jail}) is gone`);
      rmSync(join(leaseDir(), ip), { force: true });
    }
    const lease: Lease = { ip, pid: process.pid, started: processStart(process.pid)!, jail, veth: vethNames(subnet, ip).host };
    try {
      writeFileSync(join(leaseDir(), ip), JSON.stringify(lease) + '\n', { flag: 'wx' });
      return lease;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (wanted) throw inUse(readLease(ip) ?? lease);
    }
  }
  throw new JailError(`no free address left in ${subnet.cidr}`, 'stop a jail, or use a bigger subnet: JAIL_SUBNET=10.231.0.0/16', 2);
}

// flock(2), not a lock file: the kernel drops the lock when its holder dies,
// so a killed launcher can never leave the network locked. Node has no flock;
// koffi calls libc's.
type Flock = (fd: number, op: number) => number;
let flock: Flock | undefined;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EINTR = 4;
const EWOULDBLOCK = 11;

async function withNetworkLock<T>(body: () => Promise<T>): Promise<T> {
  flock ??= koffi.load('libc.so.6').func('int flock(int fd, int op)') as unknown as Flock;
  const fd = openSync(leaseDir(), 'r'); // Node opens with O_CLOEXEC: the ip/iptables children do not inherit the lock
  try {
    const deadline = Date.now() + 30_000;
    while (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      if (![EWOULDBLOCK, EINTR].includes(koffi.errno())) throw new Error(`flock ${leaseDir()}: errno ${koffi.errno()}`);
      if (Date.now() > deadline) throw new JailError('another jail has held the network lock for 30 s', 'wait for it to finish starting or stopping; if none is running, sudo npm run clean');
      await new Promise((r) => setTimeout(r, 20));
    }
    return await body();
  } finally {
    closeSync(fd); // closing the only descriptor of the open file releases the flock
  }
}

// ---------------------------------------------------------------------------
// What the first bridged jail changes on the host, and the last one restores

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const savedPath = (): string => join(runDir(), 'network.saved.json');

/** The host as it was before the first jail: restored by the last one, or by npm run clean. */
interface SavedHost {
  ipForward: string;
  /** iptables-nft creates a table on its first rule and never deletes it: we delete the ones we created. */
  iptablesTables: string[];
}

const readIpForward = (): string => readFileSync(IP_FORWARD, 'utf8').trim();

function readSaved(): SavedHost | undefined {
  try {
    return JSON.parse(readFileSync(savedPath(), 'utf8')) as SavedHost;
  } catch {
    return undefined;
  }
}

/** Only the first jail records; a killed run leaves the record, so the next one keeps the original values. */
async function saveHostNetwork(): Promise<void> {
  if (existsSync(savedPath())) return;
  const saved: SavedHost = { ipForward: readIpForward(), iptablesTables: [...(await iptablesTables()).keys()] };
  writeFileSync(savedPath(), JSON.stringify(saved) + '\n', { flag: 'wx' });
}

interface BridgeState {
  up: boolean;
  addrs: string[];
}

async function bridgeState(): Promise<BridgeState | undefined> {
  type Link = { flags: string[]; addr_info?: { family: string; local: string; prefixlen: number }[] };
  const [link] = await ipJson<Link[]>('addr', 'show', 'dev', BRIDGE);
  if (!link) return undefined;
  const addrs = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  return { up: link.flags.includes('UP'), addrs };
}

/** 02:… is a locally administered MAC, nobody's hardware; the rest spells the gateway: 10.231.0.1 -> 02:00:0a:e7:00:01. */
const bridgeMac = (subnet: Subnet): string => ['02', '00', ...subnet.gateway.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');

async function createBridge(subnet: Subnet): Promise<void> {
  let bridge = await bridgeState();
  if (!bridge) {
    heading(`Building the workshop bridge ${BRIDGE}`);
    explain('A bridge is a switch inside the kernel. It may have many ports: a frame that comes in on one port leaves');
    explain('by the port behind which its destination lives. Each jail will plug one end of a veth pair into it.');
    explain(`(The old tools said: brctl addbr ${BRIDGE}; brctl addif ${BRIDGE} PORT.)`);
    // Without an address of its own a bridge takes the lowest MAC among its ports: when that jail
    // leaves, the gateway's MAC changes under the others' ARP caches and they lose it for half a minute.
    await ip('link', 'add', BRIDGE, 'address', bridgeMac(subnet), 'type', 'bridge');
    bridge = { up: false, addrs: [] };
  }
  if (bridge.addrs.length === 0) {
    explain(`The bridge's own address, ${subnet.gateway}, is the jails' gateway: packets for the outside go to the host through it.`);
    await ip('addr', 'add', `${subnet.gateway}/${subnet.prefix}`, 'dev', BRIDGE);
  }
  if (!bridge.up) await ip('link', 'set', BRIDGE, 'up');
}

function enableIpForward(): void {
  if (readIpForward() === '1') return;
  explain(`A bridge alone does not reach the outside: the host must route between ${BRIDGE} and its uplink.`);
  showCommand('sysctl -w net.ipv4.ip_forward=1');
  writeFileSync(IP_FORWARD, '1\n');
}

interface Rule {
  table: 'filter' | 'nat';
  chain: string;
  match: string[];
  target: string[];
  /** Starts with baj, so cleanup finds the rule by its comment alone. */
  comment: string;
}

const ruleArgs = (r: Rule): string[] => [...r.match, '-m', 'comment', '--comment', r.comment, ...r.target];
const ruleExists = (r: Rule): Promise<boolean> => succeeds(['iptables', '-w', '-t', r.table, '-C', r.chain, ...ruleArgs(r)]);

/** Inserted at the top: a host firewall with a DROP policy (Docker sets one on FORWARD) must not shadow them. */
async function addRule(rule: Rule): Promise<void> {
  if (!(await ruleExists(rule))) await iptables('-t', rule.table, '-I', rule.chain, ...ruleArgs(rule));
}

async function deleteRule(rule: Rule): Promise<void> {
  while (await ruleExists(rule)) await iptables('-t', rule.table, '-D', rule.chain, ...ruleArgs(rule));
}

function sharedRules(subnet: Subnet): Rule[] {
  return [
    // The outside world has no route back to 10.231.0.x: rewrite the source to the host's address on the way out.
    { table: 'nat', chain: 'POSTROUTING', match: ['-s', subnet.cidr, '!', '-o', BRIDGE], target: ['-j', 'MASQUERADE'], comment: `${BRIDGE}-masquerade` },
    { table: 'filter', chain: 'FORWARD', match: ['-i', BRIDGE], target: ['-j', 'ACCEPT'], comment: `${BRIDGE}-from-jails` },
    // Into the jails: replies, and connections to a published port (ctstate DNAT); nothing else from outside.
    { table: 'filter', chain: 'FORWARD', match: ['-o', BRIDGE, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED,DNAT'], target: ['-j', 'ACCEPT'], comment: `${BRIDGE}-to-jails` },
  ];
}

async function joinSharedNetwork(subnet: Subnet): Promise<void> {
  await saveHostNetwork();
  await createBridge(subnet);
  const rules = sharedRules(subnet);
  if (readIpForward() !== '1' || !(await Promise.all(rules.map(ruleExists))).every(Boolean)) {
    heading('Letting the jails out: forwarding and NAT');
    enableIpForward();
    for (const rule of rules) await addRule(rule);
  }
}

/** Called by each bridged jail as it leaves: its lease goes, and with the last lease everything shared. */
async function leaveSharedNetwork(lease: Lease): Promise<void> {
  await withNetworkLock(async () => {
    rmSync(join(leaseDir(), lease.ip), { force: true });
    if (readLeases().some(isLive)) return; // another jail still uses the bridge
    heading(`The last jail on ${BRIDGE} is gone: restoring the host's network`);
    await pruneNetwork([], 'ours');
  });
}

/** The host's iptables tables, with their chains and how many rules each has (iptables-save lists only existing tables). */
async function iptablesTables(): Promise<Map<string, { chains: string[]; rules: number }>> {
  const tables = new Map<string, { chains: string[]; rules: number }>();
  let current = { chains: [] as string[], rules: 0 };
  for (const line of (await run(['iptables-save'])).split('\n')) {
    if (line.startsWith('*')) tables.set(line.slice(1), (current = { chains: [], rules: 0 }));
    else if (line.startsWith(':')) current.chains.push(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-A ')) current.rules++;
  }
  return tables;
}

const builtinChains: Record<string, string[]> = { filter: ['INPUT', 'FORWARD', 'OUTPUT'], nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'] };

async function deleteEmptyTables(existedBefore: string[]): Promise<void> {
  if (!(await run(['iptables', '--version'])).includes('nf_tables')) return; // iptables-legacy's tables are kernel modules, not made on demand
  for (const [table, t] of await iptablesTables()) {
    const builtins = builtinChains[table];
    if (!builtins || existedBefore.includes(table) || t.rules > 0 || !t.chains.every((c) => builtins.includes(c))) continue;
    if (!which('nft')) {
      warn(`the iptables table ${table} is empty but stays: install nftables (sudo apt-get install nftables) to let cleanup remove it`);
      continue;
    }
    explain(`iptables-nft made the table ${table} for our first rule; it is empty now and did not exist before.`);
    showCommand(`nft delete table ip ${table}`);
    await run(['nft', 'delete', 'table', 'ip', table]);
  }
}

async function restoreHostNetwork(): Promise<void> {
  if (!existsSync(savedPath())) return;
  const saved = readSaved();
  if (saved && readIpForward() !== saved.ipForward) {
    showCommand(`sysctl -w net.ipv4.ip_forward=${saved.ipForward}`);
    writeFileSync(IP_FORWARD, saved.ipForward + '\n');
  }
  if (saved) await deleteEmptyTables(saved.iptablesTables);
  rmSync(savedPath(), { force: true });
}

// ---------------------------------------------------------------------------
// DNS: systemd-resolved's stub 127.0.0.53 is the host's loopback; from the
// jail's namespace that address is the jail's own lo. Give it the servers
// the stub itself asks.

export { upstreamResolvConf } from '../../lib/resolv.ts';
import { upstreamResolvConf } from '../../lib/resolv.ts';

const resolvPath = (jail: string): string => join(runDir(), `${jailTag(jail)}.resolv.conf`);

function bindResolvConf(spec: JailSpec, cleanup: CleanupStack): void {
  const { text, servers, source } = upstreamResolvConf();
  if (servers.length === 0) warn(`${source} names no nameserver the jail can reach: names will not resolve inside`);
  const file = resolvPath(spec.name);
  ensureDir(runDir());
  writeFileSync(file, text);
  cleanup.defer(`resolv.conf of ${spec.name}`, () => rmSync(file, { force: true }));
  explain(`The jail's /etc/resolv.conf: ${servers.join(', ') || 'no server'} (from ${source}).`);
  spec.binds.push({ source: file, target: '/etc/resolv.conf', readonly: true });
}

// ---------------------------------------------------------------------------
// One jail's cable: a veth pair from baj0 into its namespace

async function createVethPair(names: { host: string; jail: string }, cleanup: CleanupStack): Promise<void> {
  await deleteLink(names.host); // a killed launcher's, left on our address: the lease is ours now, so is the name
  explain('A veth pair is a virtual cable: a frame sent into one end comes out of the other.');
  await ip('link', 'add', names.host, 'type', 'veth', 'peer', 'name', names.jail);
  cleanup.defer(`veth pair ${names.host}`, () => deleteLink(names.host)); // deleting one end deletes both
}

async function plugIntoBridge(hostEnd: string): Promise<void> {
  explain(`One end becomes a port of ${BRIDGE} (brctl addif ${BRIDGE} ${hostEnd}).`);
  await ip('link', 'set', hostEnd, 'master', BRIDGE, 'up');
}

async function moveIntoNamespace(jailEnd: string, pid: number): Promise<void> {
  explain(`The other end moves into the network namespace of the jail's PID 1 (${pid}); the host no longer sees it.`);
  await ip('link', 'set', jailEnd, 'netns', String(pid));
}

async function configureJailEnd(pid: number, jailEnd: string, address: string, subnet: Subnet): Promise<void> {
  explain(`Inside, it becomes eth0 with ${address}/${subnet.prefix}, and every other destination goes via ${subnet.gateway}.`);
  await ipInJail(pid, 'link', 'set', jailEnd, 'name', 'eth0');
  await ipInJail(pid, 'addr', 'add', `${address}/${subnet.prefix}`, 'dev', 'eth0');
  await ipInJail(pid, 'link', 'set', 'eth0', 'up');
  await bringLoopbackUp(pid);
  await ipInJail(pid, 'route', 'add', 'default', 'via', subnet.gateway);
}

/** A new network namespace has a loopback that is down: even 127.0.0.1 does not answer until it is up. */
async function bringLoopbackUp(pid: number): Promise<void> {
  await ipInJail(pid, 'link', 'set', 'lo', 'up');
}

// ---------------------------------------------------------------------------
// Publishing a port: two paths to the jail.
//
// Packets from other hosts and namespaces arrive on an interface and pass nat
// PREROUTING, where DNAT rewrites their destination to the jail's address; the
// jail sees the real client address. Connections the host opens to its own
// addresses (127.0.0.1 above all) go out through OUTPUT and loop back through
// lo, never passing PREROUTING: no DNAT there. For them the launcher listens
// on the port itself and copies bytes to the jail, exactly what Docker's
// docker-proxy does. The alternative (DNAT in OUTPUT + route_localnet=1 +
// SNAT of 127.0.0.1) changes more host settings and cannot be undone if the
// launcher is killed; a listening socket closes with its process.

/** The bind is both the check and the reservation: no other program can take the port in between. */
async function reserveHostPort(m: PortMapping): Promise<Server> {
  const hint = `publish on another host port, e.g. --publish ${m.hostPort === 65535 ? m.hostPort - 1 : m.hostPort + 1}:${m.jailPort}; \`ss -ltnp 'sport = :${m.hostPort}'\` shows who holds it`;
  const listen = (server: Server, host: string) =>
    new Promise<Server>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new JailError(`host port ${m.hostPort} is already taken (on ${host})`, hint, 2) : err));
      server.listen({ port: m.hostPort, host }, () => resolve(server));
    });
  const probe = await listen(createServer(), '127.0.0.1');
  await new Promise((r) => probe.close(r));
  return listen(createServer({ allowHalfOpen: true }), '0.0.0.0');
}

/** The launcher's docker-proxy: one second connection to the jail per connection accepted on the host. */
function proxyToJail(server: Server, target: () => { host: string; port: number } | undefined): () => Promise<void> {
  const open = new Set<Socket>();
  server.on('connection', (client) => {
    const to = target();
    if (!to) return void client.destroy(); // before attach: there is no jail to talk to yet
    const upstream = connect({ ...to, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => (client.destroy(), upstream.destroy()));
    }
    client.pipe(upstream).pipe(client); // allowHalfOpen: a client's FIN reaches the jail, the answer still comes back
  });
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of open) s.destroy();
    });
}

/** A jail's name as it appears in file names and iptables comments: baj first, no spaces or slashes. */
const jailTag = (jail: string): string => (jail.startsWith(PREFIX) ? jail : `${PREFIX}-${jail}`).replace(/[^\w.-]/g, '_');

function publishRule(jail: string, m: PortMapping, address: string): Rule {
  return {
    table: 'nat',
    chain: 'PREROUTING',
    // not from baj0: a jail reaching a published port of another jail goes through the proxy,
    // since a DNAT back out of baj0 would let the answer bypass the host (no un-DNAT)
    match: ['!', '-i', BRIDGE, '-p', 'tcp', '--dport', String(m.hostPort), '-m', 'addrtype', '--dst-type', 'LOCAL'],
    target: ['-j', 'DNAT', '--to-destination', `${address}:${m.jailPort}`],
    comment: `${jailTag(jail)}-publish-${m.hostPort}`,
  };
}

async function publishPorts(spec: JailSpec, publish: PortMapping[], address: string, cleanup: CleanupStack): Promise<void> {
  if (publish.length === 0) return;
  heading('Publishing ports');
  explain('From other hosts and namespaces: DNAT in nat PREROUTING. From this host itself (127.0.0.1): the launcher\'s proxy,');
  explain('because connections to the host\'s own addresses never pass PREROUTING. Docker does the same with docker-proxy.');
  for (const m of publish) {
    const rule = publishRule(spec.name, m, address);
    await addRule(rule);
    cleanup.defer(`publish ${m.hostPort}`, () => deleteRule(rule));
    ok(`host port ${m.hostPort} -> ${address}:${m.jailPort}`);
  }
}

// ---------------------------------------------------------------------------
// The topology picture

export interface JailNetwork {
  jail: string;
  pid: number;
  mode: NetworkMode;
  publish: PortMapping[];
  /** host mode: the host's interfaces, which the jail sees too. */
  hostLinks: string[];
  bridge?: {
    name: string;
    subnet: string;
    gateway: string;
    prefix: number;
    ip: string;
    hostVeth: string;
    /** The other jails on the bridge when this one was attached. */
    neighbours: { ip: string; veth: string }[];
    /** Where the host's default route leads. */
    uplink?: { dev: string; address?: string };
  };
}

function box(lines: string[], indent: string, tee?: number): string[] {
  const width = Math.max(...lines.map((l) => l.length)) + 2;
  const border = '+' + [...'-'.repeat(width)].map((c, i) => (i === tee ? '+' : c)).join('') + '+';
  return [border, ...lines.map((l) => `| ${l.padEnd(width - 1)}|`), border].map((l) => indent + l);
}

/** A small picture of one jail's network, with its real names and addresses. */
export function drawTopology(net: JailNetwork): string {
  if (net.mode === 'host') {
    return [
      `  jail ${net.jail} (pid ${net.pid}) shares the host's network namespace:`,
      `  it sees the host's interfaces (${net.hostLinks.join(', ')}) and shares its ports.`,
    ].join('\n');
  }
  if (net.mode === 'none' || !net.bridge) {
    return [`  jail ${net.jail}: network namespace of pid ${net.pid}`, ...box(['lo   127.0.0.1/8   up', '(no other interface: nothing in, nothing out)'], '  ')].join('\n');
  }
  const b = net.bridge;
  const others = b.neighbours.map((n) => `${n.veth} (${n.ip})`);
  const lines = [
    '  host: the root network namespace',
    b.uplink ? `      ${b.uplink.dev} ${b.uplink.address ?? ''}  <-- outbound: MASQUERADE -s ${b.subnet} ! -o ${b.name}` : '      (no default route: the jails reach only this host)',
    '        ^',
    '        |  routed by the host (net.ipv4.ip_forward=1)',
    ...box([`${b.name}   bridge   ${b.gateway}/${b.prefix}   the jails' gateway`, ...(others.length ? [`other ports: ${others.join(', ')}`] : [])], '     ', 2),
    `        | ${b.hostVeth.padEnd(8)} veth, host end (a port of ${b.name})`,
    `  - - - | - - - - - - - - - - - - - - - - - - - - -  namespace boundary`,
    `        | ${'eth0'.padEnd(8)} veth, jail end   ${b.ip}/${b.prefix}`,
    `  jail ${net.jail}: network namespace of pid ${net.pid}`,
    `      lo up, default via ${b.gateway}`,
  ];
  for (const m of net.publish) {
    lines.push(`  published: tcp *:${m.hostPort} -> ${b.ip}:${m.jailPort}  (DNAT from other hosts and namespaces; from this host via the launcher's proxy)`);
  }
  return lines.join('\n');
}

async function uplink(): Promise<{ dev: string; address?: string } | undefined> {
  const [route] = await ipJson<{ dev?: string }[]>('-4', 'route', 'show', 'default');
  if (!route?.dev) return undefined;
  const [link] = await ipJson<{ addr_info?: { local: string }[] }[]>('-4', 'addr', 'show', 'dev', route.dev);
  return { dev: route.dev, address: link?.addr_info?.[0]?.local };
}

// ---------------------------------------------------------------------------
// The hook

export interface NetworkOptions {
  mode: NetworkMode;
  /** bridge only: this address instead of the next free one. */
  ip?: string;
  publish: PortMapping[];
  /** bridge only: instead of JAIL_SUBNET or 10.231.0.0/24. */
  subnet?: string;
}

export interface NetworkHook extends JailHook {
  /** The jail's address on the bridge, once prepare() has leased it. */
  readonly address: string | undefined;
  /** What attach() built; undefined before. */
  readonly network: JailNetwork | undefined;
  /** drawTopology() of this jail; '' before attach. */
  topology(): string;
}

/** Everything that can be checked before anything is made, so bad input leaves nothing half-made. */
async function checkOptions(spec: JailSpec, opts: NetworkOptions): Promise<{ subnet?: Subnet; wanted?: string }> {
  const mode = parseNetworkMode(opts.mode);
  if (mode === 'none') requireTools('ip', 'nsenter');
  const wantsNet = networkNamespaces(mode).includes('net');
  if (wantsNet !== spec.namespaces.includes('net')) {
    throw new JailError(`--net ${mode} ${wantsNet ? 'needs' : 'must not have'} a network namespace of the jail's own`, "build the spec's namespaces with networkNamespaces(mode)");
  }
  if (mode !== 'bridge') {
    if (opts.publish.length) throw new JailError(`--publish needs --net bridge`, mode === 'host' ? "in host mode the jail's servers already listen on the host's ports" : 'with --net none nothing can reach the jail', 2);
    if (opts.ip !== undefined) throw new JailError('--ip needs --net bridge', 'only a bridged jail has an address of its own', 2);
    return {};
  }
  const subnet = jailSubnet(opts.subnet);
  const wanted = opts.ip === undefined ? undefined : checkJailAddress(opts.ip, subnet);
  const ports = opts.publish.map((m) => m.hostPort);
  const twice = ports.find((p, i) => ports.indexOf(p) !== i);
  if (twice !== undefined) throw new JailError(`host port ${twice} is published twice`, 'each host port can lead to one jail port only', 2);
  requireTools('ip', 'iptables', 'nsenter');
  await checkSubnetIsFree(subnet);
  const held = wanted ? readLease(wanted) : undefined;
  if (held && isLive(held)) throw inUse(held);
  return { subnet, wanted };
}

/** A subnet that overlaps a route of the host would shadow it, or be shadowed: e.g. a VPN on 10.0.0.0/8. */
async function checkSubnetIsFree(subnet: Subnet): Promise<void> {
  for (const r of await ipJson<{ dst: string; dev?: string }[]>('-4', 'route', 'show')) {
    if (r.dev === BRIDGE || r.dst === 'default') continue;
    const [addr = '', len = '32'] = r.dst.split('/');
    const net = parseIPv4(addr);
    const mask = maskOf(Math.min(Number(len), subnet.prefix));
    if (net !== undefined && ((net & mask) >>> 0) === ((subnet.network & mask) >>> 0)) {
      throw new JailError(`the jail subnet ${subnet.cidr} overlaps the host's route to ${r.dst} (${r.dev})`, 'choose a free subnet, e.g. JAIL_SUBNET=10.232.0.0/24', 2);
    }
  }
  const bridge = await bridgeState();
  const mine = `${subnet.gateway}/${subnet.prefix}`;
  if (bridge && bridge.addrs.length && !bridge.addrs.includes(mine)) {
    throw new JailError(`${BRIDGE} already serves ${bridge.addrs.join(', ')}, not ${subnet.cidr}`, 'run every jail with the same JAIL_SUBNET, or stop the others and run sudo npm run clean', 2);
  }
}

export function networkHook(opts: NetworkOptions): NetworkHook {
  let subnet: Subnet | undefined;
  let lease: Lease | undefined;
  let network: JailNetwork | undefined;

  return {
    name: 'network',
    get address() {
      return lease?.ip;
    },
    get network() {
      return network;
    },
    topology: () => (network ? drawTopology(network) : ''),

    async prepare(spec, cleanup) {
      requireRoot(`--net ${opts.mode}`);
      const checked = await checkOptions(spec, opts);
      if (opts.mode === 'host') {
        // Same namespace as the host: even a 127.0.0.53 stub answers, so the host's own file works.
        spec.binds.push({ source: '/etc/resolv.conf', target: '/etc/resolv.conf', readonly: true });
        return;
      }
      if (opts.mode !== 'bridge') return;
      subnet = checked.subnet!;
      for (const m of opts.publish) {
        const server = await reserveHostPort(m);
        cleanup.defer(`proxy on host port ${m.hostPort}`, proxyToJail(server, () => (network?.bridge ? { host: network.bridge.ip, port: m.jailPort } : undefined)));
      }
      lease = await withNetworkLock(async () => {
        const taken = takeLease(subnet!, checked.wanted, spec.name);
        cleanup.defer(`address lease ${taken.ip}`, () => leaveSharedNetwork(taken)); // before the shared pieces: it also undoes half of them
        await joinSharedNetwork(subnet!);
        return taken;
      });
      ok(`jail ${spec.name} gets ${lease.ip}/${subnet.prefix} on ${BRIDGE}`);
      bindResolvConf(spec, cleanup);
    },

    async attach(spec, initPid, cleanup) {
      if (opts.mode === 'host') {
        network = { jail: spec.name, pid: initPid, mode: 'host', publish: [], hostLinks: (await ipJson<{ ifname: string }[]>('link', 'show')).map((l) => l.ifname) };
        return;
      }
      checkOwnNetns(initPid);
      if (opts.mode === 'none') {
        heading(`Jail ${spec.name}: a network namespace with only lo`);
        await bringLoopbackUp(initPid);
        network = { jail: spec.name, pid: initPid, mode: 'none', publish: [], hostLinks: [] };
        return;
      }
      if (!lease || !subnet) throw new Error('networkHook: attach() before prepare()');
      heading(`Plugging jail ${spec.name} into ${BRIDGE}`);
      const names = vethNames(subnet, lease.ip);
      await createVethPair(names, cleanup);
      await plugIntoBridge(names.host);
      await moveIntoNamespace(names.jail, initPid);
      await configureJailEnd(initPid, names.jail, lease.ip, subnet);
      await publishPorts(spec, opts.publish, lease.ip, cleanup);
      const neighbours = readLeases()
        .filter((l) => l.ip !== lease!.ip && isLive(l))
        .map((l) => ({ ip: l.ip, veth: l.veth }));
      network = {
        jail: spec.name,
        pid: initPid,
        mode: 'bridge',
        publish: opts.publish,
        hostLinks: [],
        bridge: { name: BRIDGE, subnet: subnet.cidr, gateway: subnet.gateway, prefix: subnet.prefix, ip: lease.ip, hostVeth: names.host, neighbours, uplink: await uplink() },
      };
    },
  };
}

// ---------------------------------------------------------------------------
// npm run clean

/** iptables-save quotes a comment with spaces: "baj x"; split a rule line the way a shell would. */
function splitRule(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[2] ?? m[1]!.replace(/\\(.)/g, '$1'));
}

async function taggedRules(): Promise<{ table: string; chain: string; args: string[]; comment: string }[]> {
  const found = [];
  let table = '';
  for (const line of (await run(['iptables-save'])).split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    if (!line.startsWith('-A ')) continue;
    const words = splitRule(line);
    const comment = words[words.indexOf('--comment') + 1] ?? '';
    if (words.includes('--comment') && comment.startsWith(PREFIX)) found.push({ table, chain: words[1]!, args: words.slice(2), comment });
  }
  return found;
}

/**
 * Removes what no live lease accounts for. scope 'ours': only this module's
 * names (the last jail leaving); 'every': every baj* veth and baj*-tagged rule
 * (npm run clean). With no live lease the bridge goes and the host is restored.
 * Returns how many things it removed. Call under the network lock.
 */
async function pruneNetwork(live: Lease[], scope: 'ours' | 'every'): Promise<number> {
  let removed = 0;
  const liveTags = live.map((l) => `${jailTag(l.jail)}-publish-`);
  const ourComment = (c: string) => scope === 'every' || c.startsWith(`${BRIDGE}-`) || /-publish-\d+$/.test(c);
  for (const rule of await taggedRules()) {
    const kept = (live.length > 0 && rule.comment.startsWith(`${BRIDGE}-`)) || liveTags.some((t) => rule.comment.startsWith(t));
    if (kept || !ourComment(rule.comment)) continue;
    await iptables('-t', rule.table, '-D', rule.chain, ...rule.args);
    removed++;
  }
  for (const { ifname } of await ipJson<{ ifname: string }[]>('link', 'show', 'type', 'veth')) {
    const ours = scope === 'every' ? ifname.startsWith(PREFIX) : ourVeth.test(ifname);
    if (!ours || live.some((l) => l.veth === ifname)) continue;
    await deleteLink(ifname);
    removed++;
  }
  for (const lease of readLeases().filter((l) => !isLive(l))) {
    explain(`stale lease ${lease.ip}: its launcher (pid ${lease.pid}) is gone`);
    rmSync(join(leaseDir(), lease.ip), { force: true });
    removed++;
  }
  for (const file of readdirSync(ensureDir(runDir())).filter((f) => f.endsWith('.resolv.conf'))) {
    if (live.some((l) => join(runDir(), file) === resolvPath(l.jail))) continue;
    explain(`stale ${file}: its jail is gone`);
    rmSync(join(runDir(), file), { force: true });
    removed++;
  }
  if (live.length === 0) {
    if (await linkExists(BRIDGE)) {
      await deleteLink(BRIDGE);
      removed++;
    }
    if (existsSync(savedPath())) {
      await restoreHostNetwork();
      removed++;
    }
  }
  return removed;
}

/**
 * For `npm run clean`: removes what killed runs left of the network (veths,
 * the bridge, baj-tagged iptables rules in every table, stale leases) and
 * restores ip_forward. Jails that still run keep what they use. Idempotent.
 */
export async function cleanNetwork(): Promise<void> {
  requireRoot('npm run clean');
  heading('Network: removing what stopped jails left behind');
  await withNetworkLock(async () => {
    const live = readLeases().filter(isLive);
    if (live.length) {
      warn(`${live.length} jail(s) still running (${live.map((l) => `${l.jail} ${l.ip}, launcher pid ${l.pid}`).join('; ')}): ${BRIDGE}, forwarding and NAT stay for them`);
    }
    const removed = await pruneNetwork(live, 'every');
    if (removed === 0) ok('nothing to remove');
  });
}
