// `docker exec`, the god process's way: PID 1 gives birth to every process
// of the jail, so it also starts the ones asked for later. A command it
// spawns is in every namespace and cgroup of the jail and inherits, from the
// init's main thread, the same capabilities, no_new_privs and seccomp filter
// as the target: nothing has to be re-entered (runc exec does it with setns
// and by applying the config again). The requests arrive on the channel to
// the launcher (fd 3, kept open close-on-exec), one JSON line each:
//   launcher -> init  exec {"id":7,"argv":["hostname"],"env":{…}}
//   init -> launcher  out {"id":7,"fd":1,"data":"<base64>"}      as it prints
//   init -> launcher  exit {"id":7,"status":0}                   after all its output
import { closeSync, openSync } from 'node:fs';
import { Socket } from 'node:net';
import { pipe, spawn } from '../../lib/libc.ts';
import { envList, resolveCommand } from '../03-namespaces/exec.ts';
import { launcherChannel, sendToLauncher } from '../03-namespaces/handshake.ts';

interface Running {
  id: number;
  open: number; // output streams not yet at their end
  status?: number;
}

const running = new Map<number, Running>(); // by pid

function finish(pid: number): void {
  const r = running.get(pid);
  if (!r || r.open > 0 || r.status === undefined) return;
  running.delete(pid);
  sendToLauncher(`exit ${JSON.stringify({ id: r.id, status: r.status })}`);
}

/** One exec request: spawn it with its stdout and stderr on pipes, stdin /dev/null. */
function execOne(id: number, argv: string[], env: Record<string, string>): void {
  const path = resolveCommand(argv[0]!, env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin');
  if (!path) {
    sendToLauncher(`out ${JSON.stringify({ id, fd: 2, data: Buffer.from(`exec: ${argv[0]}: command not found\n`).toString('base64') })}`);
    sendToLauncher(`exit ${JSON.stringify({ id, status: 127 })}`);
    return;
  }
  const [out, outW] = pipe();
  const [err, errW] = pipe();
  const devnull = openSync('/dev/null', 'r');
  let pid: number;
  try {
    pid = spawn(path, argv, envList(env), { newSession: true, stdio: [devnull, outW, errW] });
  } catch (e) {
    for (const fd of [out, err]) closeSync(fd);
    sendToLauncher(`out ${JSON.stringify({ id, fd: 2, data: Buffer.from(`exec: ${(e as Error).message}\n`).toString('base64') })}`);
    sendToLauncher(`exit ${JSON.stringify({ id, status: 126 })}`);
    return;
  } finally {
    for (const fd of [outW, errW, devnull]) closeSync(fd);
  }
  const r: Running = { id, open: 2 };
  running.set(pid, r);
  for (const [fd, n] of [[out, 1], [err, 2]] as const) {
    const stream = new Socket({ fd, readable: true, writable: false });
    stream.on('data', (d: Buffer) => sendToLauncher(`out ${JSON.stringify({ id, fd: n, data: d.toString('base64') })}`));
    stream.on('close', () => {
      r.open -= 1;
      finish(pid);
    });
  }
}

/** Starts listening for exec requests; returns the reaper's callback for superviseTarget's onReaped. */
export function serveExec(defaultEnv: Record<string, string>): (pid: number, status: number) => void {
  const channel = launcherChannel();
  let buf = '';
  channel.on('data', (d) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.startsWith('exec ')) continue;
      try {
        const req = JSON.parse(line.slice(5)) as { id: number; argv: string[]; env?: Record<string, string> };
        execOne(req.id, req.argv, { ...defaultEnv, ...req.env });
      } catch (e) {
        sendToLauncher(`out ${JSON.stringify({ id: -1, fd: 2, data: Buffer.from(String(e)).toString('base64') })}`);
      }
    }
  });
  channel.resume();
  return (pid, status) => {
    const r = running.get(pid);
    if (!r) return;
    r.status = status;
    finish(pid);
  };
}
