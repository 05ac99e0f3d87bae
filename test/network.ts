// Step 05's tests, their jails and their world: jails started the way a
// learner starts them (bin/step.mjs 5) in the background, commands run in
// them as `docker exec` would, "the outside world" (a network namespace
// behind a veth pair to the host, on 198.51.100.0/24, TEST-NET-2, routed
// nowhere, with no route back to the jails: only the host's NAT can bring an
// answer home), and the snapshots of what must be the same before and after.
// Traffic goes only to loopback and to network namespaces made here.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import { childrenOf } from '../lib/proc.ts';
import { runDir } from '../lib/state.ts';
import { cleanNetwork } from '../steps/05-network-bridge/clean.ts';
import { hostState, isRoot, repo, rootSuite, runStep, sh, stepArgv, waitFor, type HostState, type Result } from './helpers.ts';

export const GATEWAY = '10.231.0.1';
/** Every jail of this file is named t5-…, so the launcher calls it baj-t5-…. */
export const NAME = 't5-';
const JAIL_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

// ---------------------------------------------------------------------------
// Jails in the background

export interface Jail {
  name: string;
  launcher: ChildProcess;
  /** The jail's PID 1 as the host sees it. */
  init: number;
  out(): string;
  err(): string;
  closed: Promise<number>;
}

export const running = new Set<Jail>();

/** `echo ready` then wait: a jail that only holds its namespaces and its address. */
export const idle = ['sh', '-c', 'ip -4 -o addr show dev eth0 2>/dev/null; echo ready; exec sleep 600'];

/**
 * busybox httpd on PORT with one CGI that answers the client's address as
 * the server sees it ($REMOTE_ADDR). The jail mounts a tmpfs of its own on
 * /tmp for it: the shared rootfs stays untouched, and the mount dies with the
 * jail's mount namespace.
 */
const WHO = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n';
export const httpd = (port: number, addr = '0.0.0.0'): string[] => [
  'sh',
  '-c',
  `mount -t tmpfs tmpfs /tmp && mkdir -p /tmp/www/cgi-bin && printf %s "$1" > /tmp/www/cgi-bin/who && chmod +x /tmp/www/cgi-bin/who && echo ready && exec httpd -f -p ${addr}:${port} -h /tmp/www`,
  'sh',
  WHO,
];

/** launcher -> setpriv, which became unshare -> the init, PID 1 in its own PID namespace. */
function initOf(launcher: number): number | undefined {
  for (const unshare of childrenOf(launcher)) {
    for (const init of childrenOf(unshare)) {
      if (/^NSpid:\s+\d+\s+1$/m.test(readFileSync(`/proc/${init}/status`, 'utf8'))) return init;
    }
  }
  return undefined;
}

/** Starts `npm run step 5 -- --name t5-NAME FLAGS -- COMMAND` in the background; resolves once it printed 'ready'. */
export async function startJail(name: string, flags: string[], command: string[], opts: { quiet?: boolean; env?: Record<string, string> } = {}): Promise<Jail> {
  const [node, ...argv] = stepArgv(5, '--name', NAME + name, ...flags, '--', ...command);
  const launcher = spawn(node!, argv, {
    cwd: repo,
    env: { ...process.env, JAIL_QUIET: opts.quiet === false ? '0' : '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  launcher.stdout!.on('data', (d) => (out += d));
  launcher.stderr!.on('data', (d) => (err += d));
  const closed = new Promise<number>((r) => launcher.on('close', (code, sig) => r(code ?? (sig === 'SIGKILL' ? 137 : 143))));
  const jail: Jail = { name, launcher, init: 0, out: () => out, err: () => err, closed };
  running.add(jail);
  const exited = () => launcher.exitCode !== null || launcher.signalCode !== null;
  await waitFor(`jail ${name} to print ready`, () => out.includes('ready') || exited(), 20_000);
  if (exited()) throw new Error(`jail ${name} stopped before it was ready (exit ${launcher.exitCode}):\n${err}`);
  jail.init = await waitFor(`the init of jail ${name}`, () => initOf(launcher.pid!));
  return jail;
}

/** SIGTERM to the launcher, the way a learner's Ctrl-C or `kill` stops a jail. */
export async function stopJail(jail: Jail): Promise<number> {
  running.delete(jail);
  if (jail.launcher.exitCode === null && jail.launcher.signalCode === null) jail.launcher.kill('SIGTERM');
  const late = setTimeout(() => jail.launcher.kill('SIGKILL'), 8000);
  const code = await jail.closed;
  clearTimeout(late);
  return code;
}

export function run(cmd: string, args: string[], env?: Record<string, string>): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: env ?? process.env, timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Like `docker exec`: a shell command in every namespace of the jail, under its root, with its PATH. */
export const execIn = (jail: Jail, command: string): Promise<Result> =>
  run('nsenter', ['-t', String(jail.init), '-a', '-r', '-w', '--', 'sh', '-c', command], { PATH: JAIL_PATH });

/** The interface names `ip -o link show` prints (busybox's and iproute2's alike). */
export const linkNames = (ipOutput: string): string[] => [...ipOutput.matchAll(/^\d+: ([^:@\s]+)/gm)].map((m) => m[1]!);
export const addressOf = (text: string): string | undefined => /inet (\d+\.\d+\.\d+\.\d+)\//.exec(text)?.[1];
export const hostNetns = (): string => readlinkSync('/proc/self/ns/net');

/** An HTTP GET from this process, i.e. from the host itself. */
export function httpGet(host: string, port: number, path = '/cgi-bin/who'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

export async function fails(p: Promise<unknown>, message: string): Promise<void> {
  let failed = false;
  await p.then(
    (v) => {
      if (v && typeof v === 'object' && 'code' in v && (v as Result).code !== 0) failed = true;
    },
    () => (failed = true),
  );
  assert.ok(failed, message);
}

// ---------------------------------------------------------------------------
// The outside world: a network namespace reachable only through the host

export const WORLD = { veth: 't5-world', host: '198.51.100.1', addr: '198.51.100.2' };

export interface World {
  holder: ChildProcess;
  netns: string;
  servers: ChildProcess[];
}
let world: World | undefined;

export function must(cmd: string): void {
  const r = sh(cmd);
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
}

/**
 * A namespace held by a sleeping process (no `ip netns add`: that would turn
 * /run/netns into a mount point for good). setpriv --pdeathsig: if this test
 * is killed, the sleeper dies, and the namespace with its veth pair goes too.
 */
export async function makeWorld(): Promise<World> {
  const holder = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--net', '--', 'sleep', '600'], { stdio: 'ignore' });
  const netns = `/proc/${holder.pid}/ns/net`;
  await waitFor('the world namespace', () => readlinkSync(netns) !== hostNetns());
  world = { holder, netns, servers: [] };
  must(`ip link add ${WORLD.veth} type veth peer name eth0 netns ${holder.pid}`);
  must(`ip addr add ${WORLD.host}/24 dev ${WORLD.veth}`);
  must(`ip link set ${WORLD.veth} up`);
  for (const cmd of [`addr add ${WORLD.addr}/24 dev eth0`, 'link set eth0 up', 'link set lo up']) must(`nsenter --net=${netns} ip ${cmd}`);
  return world;
}

export async function removeWorld(): Promise<void> {
  if (!world) return;
  const w = world;
  world = undefined;
  for (const child of [...w.servers, w.holder]) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    await new Promise((r) => (child.once('exit', r), child.kill('SIGKILL')));
  }
  sh(`ip link del ${WORLD.veth} 2>/dev/null`); // usually gone with the namespace already
}

const SERVER = `require('net').createServer((s) => s.end(s.remoteAddress.replace(/^::ffff:/, '') + '\\n')).listen(+process.argv[1], '0.0.0.0', () => console.log('ready'))`;

/** A TCP server in the world that tells each client the address it came from. */
export async function serveInWorld(w: World, port: number): Promise<void> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'nsenter', `--net=${w.netns}`, process.execPath, '-e', SERVER, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  w.servers.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await waitFor(`the world's server on port ${port}`, () => out.includes('ready'));
}

/** An HTTP GET from inside the world (the host's busybox wget, in the world's namespace; its -T segfaults in 1.35, hence timeout). */
export const getFromWorld = (w: World, url: string): Promise<Result> => run('nsenter', [`--net=${w.netns}`, 'timeout', '3', 'busybox', 'wget', '-qO-', url]);

/**
 * A firewall like Docker's FORWARD DROP, but only for the world's interface
 * (other people's forwarded traffic on this machine is left alone): appended,
 * so the step's own ACCEPT rules, inserted at the top, still come first.
 * Add it after the first jail made the filter table, drop it before the last
 * one leaves: the jail deletes the iptables tables it created.
 */
const FIREWALL = [['-i', WORLD.veth], ['-o', WORLD.veth]].map((m) => ['FORWARD', ...m, '-m', 'comment', '--comment', 't5-test-firewall', '-j', 'DROP']);
export const firewallOn = (): void => FIREWALL.forEach((r) => must(`iptables -w -A ${r.join(' ')}`));
export const firewallOff = (): void => FIREWALL.forEach((r) => sh(`while iptables -w -D ${r.join(' ')} 2>/dev/null; do :; done`));

// ---------------------------------------------------------------------------
// What must be the same before and after

export interface Snapshot {
  host: HostState;
  /** The step's own state: leases, the saved host settings, resolv.conf copies. */
  files: string[];
}

function networkFiles(): string[] {
  const dir = runDir();
  const leases = existsSync(join(dir, 'leases')) ? readdirSync(join(dir, 'leases')).map((f) => `leases/${f}`) : [];
  const top = existsSync(dir) ? readdirSync(dir).filter((f) => f === 'network.saved.json' || f.endsWith('.resolv.conf')) : [];
  return [...leases, ...top].sort();
}

export function snapshot(): Snapshot {
  return { host: hostState(), files: networkFiles() };
}

/** Nothing of ours left: waits a little, since the kernel frees a dead namespace's veth asynchronously. */
export async function assertUnchanged(before: Snapshot, context: string): Promise<void> {
  let after = snapshot();
  const deadline = Date.now() + 5000;
  while (JSON.stringify(after) !== JSON.stringify(before) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    after = snapshot();
  }
  for (const key of Object.keys(before.host) as (keyof Snapshot['host'])[]) {
    assert.equal(after.host[key], before.host[key], `host ${key} changed ${context}`);
  }
  assert.equal(after.files, before.files, `the step's state files changed ${context}`);
}

/** A failed run: exit status 2, one clear `error:` line with a hint, and no stack trace. */
export function assertRefused(r: Result, message: RegExp, hint = true): void {
  assert.is(r.code, 2, `exit status (stderr: ${r.stderr})`);
  assert.match(r.stderr, /^error: /m);
  assert.match(r.stderr, message);
  if (hint) assert.match(r.stderr, /^ {2}hint: /m);
  assert.not.match(r.stderr, /^\s+at /m, 'no stack trace');
}

let initial: Snapshot;
let before: Snapshot;
/** The snapshot taken before the test that is running now. */
export const beforeThisTest = (): Snapshot => before;

/**
 * A suite of step 05's jails: the busybox rootfs built once; after every
 * test its jails stopped, the world removed and the host as it was; after
 * the file, cleanNetwork() and the host as it was before the file.
 */
export function networkSuite(name: string): Test {
  const test = rootSuite(name);
  test.before(async () => {
    if (!isRoot) return;
    assert.is((await runStep(1, [])).code, 0, 'building the busybox rootfs');
    initial = snapshot();
  });
  test.before.each(() => {
    if (isRoot) before = snapshot();
  });
  test.after.each(async () => {
    firewallOff();
    await Promise.all([...running].map(stopJail));
    await removeWorld();
    await assertUnchanged(before, 'after the test');
  });
  test.after(async () => {
    if (!isRoot) return;
    await cleanNetwork();
    await assertUnchanged(initial, 'after the whole file and cleanNetwork()');
  });
  return test;
}
