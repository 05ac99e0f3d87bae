// The finale as a module: a Debian jail running sshd on port 23322, in the
// foreground (the jail's shell on your terminal) or detached (--detach: in
// the background until --stop), ready once a real key login works. Its root
// is an overlay of step 01's Debian tree (root.ts). Step 07 runs it as the
// text's jail; step 08 runs the same demo with every lock on, through its
// own launch function.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { checkHostname, jailFlags, type ParsedArgs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { colour, explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import type { JailHook, JailSpec } from '../../lib/spec.ts';
import { repoPath } from '../../lib/paths.ts';
import { ensureDir, isAlive, runDir } from '../../lib/state.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { launchJail } from '../03-namespaces/launcher.ts';
import { initPath, pivotSpec } from '../04-pivot-root/jail.ts';
import { networkChoice, withNetwork } from '../05-network-bridge/modes.ts';
import { networkHook } from '../05-network-bridge/network.ts';
import { showTopology } from '../05-network-bridge/topology.ts';
import { cgroupHook } from '../06-cgroups/cgroups.ts';
import { cgroupFlags, limitsFromFlags } from '../06-cgroups/flags.ts';
import { demoRoot, demoRootHook, overlayOf, type DemoRoot } from './root.ts';
import { loginWorks, prepareSshUpper, sshBanner, sshCommand, sshLower, SSH_PORT, writeKnownHosts } from './sshd.ts';

export const sshDemoFlags = {
  ...jailFlags,
  net: { type: 'string', value: 'MODE', help: "host (the lesson's way: sshd on the host's port 23322) or bridge (23322 published to the jail)", default: 'host' },
  listen: { type: 'string', value: 'ADDR', help: 'the host address sshd is reachable on (default 127.0.0.1; 0.0.0.0 = every interface)', default: '127.0.0.1' },
  detach: { type: 'boolean', help: 'run in the background; return once an ssh login works' },
  stop: { type: 'boolean', help: 'stop the background jail (ends sshd and every session)' },
  daemon: { type: 'boolean', help: '(internal) the background half of --detach' },
  ...cgroupFlags,
} as const;

/** Sensible rations for sshd, a few sessions and the god process. */
const DEFAULT_LIMITS = { memory: '512M', pids: '256', cpus: '1' };
const pidFile = (): string => join(runDir(), 'ssh-demo.pid');
const logFile = (): string => join(runDir(), 'ssh-demo.log');

/** The running demo's launcher (step 07's or step 08's --ssh), if any. */
export function runningPid(): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    return pid > 0 && isAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A port is free if we can bind it ourselves, this instant. */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

async function waitUntil(what: string, probe: () => Promise<boolean>, alive: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return;
    if (!alive()) throw new JailError(`the jail stopped before ${what}`, `see ${logFile()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new JailError(`timed out waiting for ${what}`, `see ${logFile()}; npm run step 7 -- --stop ends it`);
}

/**
 * Ready means a real login works — not that a port accepted a connection.
 * First sshd must answer with its banner; then we trust exactly the host key
 * this jail made at its start (in its upper), and log in with our key.
 */
async function sshdReady(upper: string, host: string): Promise<boolean> {
  if (!(await sshBanner(host)) || !existsSync(join(upper, 'etc/ssh/ssh_host_ed25519_key.pub'))) return false;
  writeKnownHosts(upper, host);
  return loginWorks(host);
}

/** Where a login goes: the --listen address, or 127.0.0.1 for every interface. */
const reachable = (listen: string): string => (listen === '0.0.0.0' ? '127.0.0.1' : listen);

function printHowToLogIn(host: string): void {
  heading('Log in');
  showCommand(`sudo ${sshCommand([], host).join(' ')}`);
  explain('then, inside: hostname; ps -ef   (PID 1 is the god process; sshd and your shell are its children)');
}

async function stop(): Promise<number> {
  const pid = runningPid();
  if (!pid) {
    rmSync(pidFile(), { force: true });
    ok('the ssh demo is not running');
    return 0;
  }
  heading(`Stopping the ssh demo (launcher pid ${pid})`);
  showCommand(`kill -TERM ${pid}`);
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 10_000;
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (isAlive(pid)) {
    warn('it did not stop in 10 s; killing it (npm run clean tidies up)');
    process.kill(pid, 'SIGKILL');
  }
  rmSync(pidFile(), { force: true });
  ok('stopped: sshd and every session are gone');
  return 0;
}

/** --detach: start our own --daemon twin (the same step, through bin/step.mjs) in a new session, and return once a login works. */
async function detach(step: number, argv: string[], upper: string, host: string): Promise<number> {
  ensureDir(runDir());
  const log = openSync(logFile(), 'w');
  const child = spawn(process.execPath, [repoPath('bin/step.mjs'), String(step), '--daemon', ...argv.filter((a) => a !== '--detach')], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...process.env, FORCE_COLOR: '0' },
  });
  closeSync(log);
  writeFileSync(pidFile(), String(child.pid));
  child.unref();
  let exited = false;
  child.on('exit', () => (exited = true));
  explain(`the jail runs in the background (launcher pid ${child.pid}, log ${logFile()})`);
  try {
    await waitUntil('sshd to accept a login', () => sshdReady(upper, host), () => !exited, 60_000);
  } catch (err) {
    if (!exited) process.kill(child.pid!, 'SIGTERM');
    process.stderr.write(readFileSync(logFile(), 'utf8').split('\n').slice(-8).join('\n') + '\n');
    throw err;
  }
  ok(`ready: ${await sshBanner(host)} on ${host}:${SSH_PORT}`);
  printHowToLogIn(host);
  explain(`stop it with: sudo npm run step ${step} -- ${step === 7 ? '' : '--ssh '}--stop`);
  return 0;
}

export type SshDemoFlags = ParsedArgs<typeof sshDemoFlags>['flags'];

export interface SshDemoOptions {
  /** The step whose entry runs the demo: --detach starts `npm run step N -- --daemon …` again. */
  step: number;
  /** argv of the step (after its number): --detach passes it on to the daemon. */
  argv: string[];
  /**
   * How the jail is started; step 07's default is step 03's launcher with
   * step 04's init, root.hook first among the hooks. Step 08 adds the user
   * namespace's part to root.hook (the overlay's dirs are root.dirs).
   */
  launch?: (spec: JailSpec, opts: { hooks: JailHook[]; onStarted: (initPid: number) => void; root: { hook: JailHook; dirs: DemoRoot } }) => Promise<number>;
  /** v1 device-cgroup rules for the jail (step 08 passes its minimal list). */
  devices?: readonly string[];
}

/** The whole demo: --stop, --detach, or the jail in the foreground. Resolves to the exit status. */
export async function runSshDemo(f: SshDemoFlags, command: string[], opts: SshDemoOptions): Promise<number> {
  requireRoot();
  if (f.stop) return stop();
  // refusals of the arguments themselves come first: they hold whatever else is true
  if (command.length) throw new JailError(`step ${opts.step} runs the lesson's start script; it takes no command`, 'for your own command use step 4, 5 or 6', 2);
  const choice = networkChoice({ net: f.net, publish: f.net === 'bridge' ? [`${f.listen}:${SSH_PORT}:${SSH_PORT}`] : [] });
  if (choice.mode === 'none') throw new JailError('--net none would leave no way in for ssh', 'use --net host or --net bridge', 2);
  const other = runningPid();
  if (other && !(f.daemon && other === process.pid)) {
    throw new JailError(`the ssh demo is already running (launcher pid ${other})`, 'stop it first: sudo npm run step 7 -- --stop');
  }
  const limits = limitsFromFlags({ ...f, memory: f.memory ?? DEFAULT_LIMITS.memory, pids: f.pids ?? DEFAULT_LIMITS.pids, cpus: f.cpus ?? DEFAULT_LIMITS.cpus });
  const hostname = checkHostname(f.hostname ?? 'hello');
  if (!(await portFree(f.listen!, SSH_PORT))) {
    throw new JailError(`port ${SSH_PORT} on ${f.listen} is already in use`, `see who holds it: ss -ltnp 'sport = :${SSH_PORT}'`);
  }
  // the lower is step 01's Debian tree (built here on first use, before --detach returns)
  const root = demoRoot(requireRootfs(await sshLower(f.rootfs)));
  if (f.detach) return detach(opts.step, opts.argv, root.upper, reachable(f.listen!));

  const spec = { ...withNetwork(pivotSpec(root.merged, hostname, false, ['/root/start_container.sh']), choice, 'ssh-demo'), overlay: overlayOf(root) };
  spec.detached = f.daemon;
  // in bridge mode sshd listens on the jail's own eth0; the host side is the published port
  const rootHook = demoRootHook(root, (r) => prepareSshUpper(r, choice.mode === 'bridge' ? '0.0.0.0' : f.listen!));
  const net = networkHook(choice);
  const launch = opts.launch ?? ((s, o) => launchJail(s, { init: initPath, hooks: [o.root.hook, ...o.hooks], onStarted: o.onStarted }));
  const status = await launch(spec, {
    root: { hook: rootHook, dirs: root },
    hooks: [net, cgroupHook(opts.devices ? { ...limits, devices: opts.devices } : limits)],
    onStarted: (pid) => {
      showTopology(net);
      heading(`The jail is up: its PID 1 is host pid ${pid}`);
      explain(`look at it from the host: sudo lsns -p ${pid}; sudo ls -l /proc/${pid}/ns; cat /proc/${pid}/cgroup`);
      if (f.daemon) return;
      // in the foreground the jail's shell owns the terminal; say how to log in once sshd answers
      void waitUntil('sshd', () => sshdReady(root.upper, reachable(f.listen!)), () => true, 60_000).then(() => {
        printHowToLogIn(reachable(f.listen!));
        process.stderr.write(colour.dim('(this shell is the jail\'s; exit it to stop the jail)\n'));
      }, () => warn('sshd did not answer within a minute'));
    },
  });
  if (f.daemon) rmSync(pidFile(), { force: true });
  return status;
}
