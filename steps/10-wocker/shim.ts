// The shim: one per jail, like containerd-shim. The daemon starts it
// detached (its own session, its log as stdout and stderr) and forgets it;
// the shim IS the jail's launcher (step 09's runOnImage), so the jail lives
// exactly as long as its shim, whatever happens to the daemon. What the
// daemon needs to know, the shim writes to disk (records.ts):
//   state.json  starting (the shim's pid and start time) -> running (init pid,
//               address) -> exited (exit code, or the sentence that stopped it)
//   shim.sock   exec, for as long as the jail runs: POST /exec {"cmd":[…]}
// The request becomes step 09's command line, parsed by step 09's own
// flags: the daemon is a thin layer over `npm run step 9`.
//   node shim.mjs ID        (SIGTERM = stop: the launcher stops the jail gracefully)
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { parseArgs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { fail } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { processStart } from '../../lib/proc.ts';
import { runFlags, runOnImage } from '../09-layers/run.ts';
import { ApiError, checkExecRequest, JAIL_ID, MAX_BODY, parseJson, type JailRequest } from './api.ts';
import { ExecClient } from './exec-client.ts';
import { readRequest, shimSocket, writeState, type ShimState } from './records.ts';

/** The jail's name on the host (its overlay dir, its veth): short, because interface names are. */
export const jailName = (id: string): string => `w${id}`;

/** POST /jails as `npm run step 9 -- …`: the same words a learner would type. */
export function stepArgv(id: string, req: JailRequest): string[] {
  const argv = ['--image', req.image, '--hostname', req.hostname, '--net', req.net];
  for (const p of req.publish) argv.push('--publish', p);
  if (req.memory) argv.push('--memory', req.memory);
  if (req.cpus) argv.push('--cpus', req.cpus);
  if (req.pids) argv.push('--pids', req.pids);
  if (req.privileged) argv.push('--privileged');
  return [...argv, '--name', jailName(id), '--', ...req.cmd];
}

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

async function shim(id: string): Promise<number> {
  const base: ShimState = { status: 'starting', shimPid: process.pid, shimStart: processStart(process.pid) ?? 0 };
  writeState(id, base);
  let ran = false;
  let server: Server | undefined;
  const exec = new ExecClient();
  try {
    const req = readRequest(id);
    if (!req) throw new JailError(`the record of jail ${id} has no request`);
    const { flags, command } = parseArgs(stepArgv(id, req), runFlags);
    server = await serveExecSocket(id, exec);
    const code = await runOnImage(flags, command, {
      init: repoPath('steps/10-wocker/init.ts'),
      onChannel: (send) => exec.attach(send),
      onMessage: (line) => void exec.onMessage(line),
      onStarted: (initPid, ip) => {
        ran = true;
        writeState(id, { ...base, status: 'running', initPid, ...(ip ? { ip } : {}) });
      },
    });
    if (!ran) throw new JailError(neverRan(req.cmd[0]!, req.image, code), undefined, code);
    writeState(id, { ...base, status: 'exited', exitCode: code });
    return code;
  } catch (err) {
    const message = (err as Error).message ?? String(err);
    const exitCode = err instanceof JailError ? err.exitCode : 125; // docker run's "the daemon failed" status
    fail(message, err instanceof JailError ? err.hint : undefined);
    // before the jail ran, the sentence is the answer to POST /jails; after, the log keeps it
    writeState(id, { ...base, status: 'exited', exitCode, ...(ran ? {} : { error: message }) });
    return exitCode;
  } finally {
    exec.close();
    server?.close();
    rmSync(shimSocket(id), { force: true });
  }
}

const id = process.argv[2] ?? '';
if (!JAIL_ID.test(id)) {
  process.stderr.write('usage: shim ID (started by the wocker daemon)\n');
  process.exit(2);
}
const code = await shim(id);
// the log is a file: nothing to drain, but let the last writes finish
setImmediate(() => process.exit(code));
