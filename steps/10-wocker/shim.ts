// The shim: one per jail, like containerd-shim. The daemon starts it
// detached (its own session, its log as stdout and stderr) and forgets it;
// the shim IS the jail's launcher (step 09's runOnImage), so the jail lives
// exactly as long as its shim, whatever happens to the daemon. What the
// daemon needs to know, the shim writes to disk (records.ts):
//   state.json  starting (the shim's pid and start time) -> running (init pid,
//               address) -> exited (exit code, or the sentence that stopped it)
//   shim.sock   exec, for as long as the jail runs: POST /exec {"cmd":[…]}
// The request becomes step 09's command line (request.ts): the daemon is a
// thin layer over `npm run step 9`.
//   node shim.mjs ID        (SIGTERM = stop: the launcher stops the jail gracefully)
//   node shim.mjs --pool LOG ID  a pool slot (pool.ts): the init started ahead, "ID" on fd 3 later
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Socket } from 'node:net';
import { JailError } from '../../lib/errors.ts';
import { fail } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { processStart } from '../../lib/proc.ts';
import { jailIdRanges } from '../03-namespaces/idrange.ts';
import { parkInit, type StartedInit } from '../03-namespaces/launcher.ts';
import { openLibseccomp } from '../08-hardening/seccomp.ts';
import { warmIdmapHelper } from '../08-hardening/userns.ts';
import { joinAhead } from '../06-cgroups/cgroups.ts';
import type { JailCgroup } from '../06-cgroups/hierarchy.ts';
import { cleanCgroups, removeCgroup } from '../06-cgroups/removal.ts';
import { jailLimits, jailShape, runOnImage } from '../09-layers/run.ts';
import { ApiError, checkExecRequest, JAIL_ID, MAX_BODY, parseJson } from './api.ts';
import { ExecClient } from './exec-client.ts';
import { readRequest, shimSocket, writeState, type ShimState } from './records.ts';
import { POOL_SHAPE, stepFlags } from './request.ts';

const INIT = repoPath('steps/10-wocker/init.ts');

/** The sentence for a jail whose init ended before its target ran: 127 and 126 as a shell says them. */
function neverRan(cmd: string, image: string, code: number): string {
  if (code === 127) return `${cmd}: command not found in image ${image}`;
  if (code === 126) return `${cmd}: not executable in image ${image}`;
  return `the jail ended (exit status ${code}) before its command ran`;
}

/** exec's socket: a unix socket only root can open (0600), gone with the jail. */
function serveExecSocket(id: string, exec: ExecClient): Promise<Server> {
  const server = createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    if (req.method !== 'POST' || req.url !== '/exec') return reply(404, { error: 'the shim answers only POST /exec' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      body += d;
      if (body.length > MAX_BODY) req.destroy();
    });
    req.on('end', async () => {
      try {
        const { cmd } = checkExecRequest(parseJson(body));
        const r = await exec.run(cmd);
        reply(200, { exitCode: r.exitCode, output: r.output });
      } catch (err) {
        reply(err instanceof ApiError ? err.status : 500, { error: (err as Error).message });
      }
    });
  });
  const path = shimSocket(id);
  rmSync(path, { force: true });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      chmodSync(path, 0o600);
      resolve(server);
    });
  });
}

/** What a state change is told to, besides state.json: the daemon that waits for it (a pool slot's channel). */
type Notify = () => void;

/** What a pool slot made ahead: the init, waiting, and its cgroup, joined. */
interface Ahead {
  parked: StartedInit;
  cgroup: JailCgroup;
}

async function shim(id: string, ahead?: Ahead, notify: Notify = () => {}): Promise<number> {
  const base: ShimState = { status: 'starting', shimPid: process.pid, shimStart: processStart(process.pid) ?? 0 };
  const say = (state: ShimState) => {
    writeState(id, state);
    notify();
  };
  say(base);
  let ran = false;
  let server: Server | undefined;
  const exec = new ExecClient();
  try {
    const req = readRequest(id);
    if (!req) throw new JailError(`the record of jail ${id} has no request`);
    // a slot is given only to a request of its shape (the daemon's Pool.fits); were it not, step 03's
    // launcher would refuse an init of other namespaces and step 06's hook a cgroup of other controllers
    const { flags, command } = stepFlags(id, req);
    server = await serveExecSocket(id, exec);
    const code = await runOnImage(flags, command, {
      init: INIT,
      parked: ahead?.parked,
      cgroup: ahead?.cgroup,
      onChannel: (send) => exec.attach(send),
      onMessage: (line) => void exec.onMessage(line),
      onStarted: (initPid, ip) => {
        ran = true;
        say({ ...base, status: 'running', initPid, ...(ip ? { ip } : {}) });
      },
    });
    if (!ran) throw new JailError(neverRan(req.cmd[0]!, req.image, code), undefined, code);
    say({ ...base, status: 'exited', exitCode: code });
    return code;
  } catch (err) {
    const message = (err as Error).message ?? String(err);
    const exitCode = err instanceof JailError ? err.exitCode : 125; // docker run's "the daemon failed" status
    fail(message, err instanceof JailError ? err.hint : undefined);
    // before the jail ran, the sentence is the answer to POST /jails; after, the log keeps it
    say({ ...base, status: 'exited', exitCode, ...(ran ? {} : { error: message }) });
    return exitCode;
  } finally {
    exec.close();
    server?.close();
    rmSync(shimSocket(id), { force: true });
    // the cgroup made ahead is the hook's to remove once its prepare ran; a start that failed sooner leaves it to us
    if (ahead) await removeCgroup(ahead.cgroup);
  }
}

/**
 * A pool slot (pool.ts), for the jail the daemon will give the id `id`: its
 * init started now, in the shape of the usual request (request.ts), its ID
 * maps written; the idmap helper waiting in its mount namespace; its cgroup
 * made and joined. Then "ready" to the daemon, on fd 3, and a wait for the
 * same id on that channel: the jail's record exists, the rest is a shim's
 * usual work. The channel closed first (the daemon stopped, or died), or
 * the init killed meanwhile (npm run clean): the slot undoes itself.
 */
async function slot(log: string, id: string): Promise<number> {
  const channel = new Socket({ fd: 3, readable: true, writable: true });
  channel.on('error', () => {}); // a daemon gone: its end of the channel is closed, nothing to tell
  let parked: StartedInit | undefined;
  let cgroup: JailCgroup | undefined;
  let joining: string | undefined; // the cgroup's name, from the moment joinAhead may have made it
  let settled = false; // taken by a jail, or leaving: either way leave() has nothing more to do
  const leave = async () => {
    if (settled) return;
    settled = true; // once: a second signal must not start a second undo
    parked?.child.kill('SIGKILL');
    await parked?.exited;
    if (cgroup) await removeCgroup(cgroup);
    else if (joining) await cleanCgroups((name) => name === joining); // made, or half made, by name
    rmSync(log, { force: true });
    process.exit(0);
  };
  process.once('SIGTERM', leave);
  const asked = new Promise<boolean>((resolve) => {
    let buf = '';
    channel.setEncoding('utf8');
    channel.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')) === id);
    });
    channel.once('close', () => resolve(false));
  });
  try {
    const { flags } = stepFlags(id, POOL_SHAPE);
    const shape = jailShape(flags);
    if (shape.locks.seccomp) openLibseccomp(); // loaded now, not in the request's time
    parked = await parkInit(shape, INIT, jailIdRanges());
    await warmIdmapHelper(parked.pid);
    joining = shape.name;
    cgroup = await joinAhead(shape.name, jailLimits(flags), parked.pid);
  } catch (err) {
    const why = (err as Error).message.split('\n')[0];
    fail(`the pool slot could not get its init ready: ${why}`);
    channel.write(`error ${why}\n`); // the log goes with the slot: the daemon says it
    await leave();
  }
  void parked!.exited.then(leave); // killed while it waited: nothing to hand out
  channel.write('ready\n');
  if (!(await asked)) await leave();
  settled = true;
  process.off('SIGTERM', leave); // from here SIGTERM is a stop, as for any shim
  return shim(id, { parked: parked!, cgroup: cgroup! }, () => void (channel.writable && channel.write('state\n')));
}

const [first = '', second = '', third = ''] = process.argv.slice(2);
if (first === '--pool' && second && JAIL_ID.test(third)) {
  const code = await slot(second, third);
  setImmediate(() => process.exit(code));
} else if (JAIL_ID.test(first)) {
  const code = await shim(first);
  // the log is a file: nothing to drain, but let the last writes finish
  setImmediate(() => process.exit(code));
} else {
  process.stderr.write('usage: shim ID | shim --pool LOG ID (started by the wocker daemon)\n');
  process.exit(2);
}
