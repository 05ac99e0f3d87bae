// The launcher: the host side of a jail (the lesson's "wocker"). It asks
// `unshare` for the namespaces, starts the init inside them, finishes what
// only the host can do (ID maps; later steps add cgroups and veths), lets the
// init go, waits, and undoes everything it made — on success, on error and
// on Ctrl-C alike.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { nodeArgs, nodeChildEnv } from '../../lib/bundle.mjs';
import { CleanupStack, withSignals } from '../../lib/cleanup.ts';
import { JailError, signalNumber } from '../../lib/errors.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { shellQuote } from '../../lib/sh.ts';
import { isRoot, requireTools } from '../../lib/preflight.ts';
import type { JailHook, JailSpec, Namespace } from '../../lib/spec.ts';
import { jailIdRanges, type IdRanges } from './idrange.ts';
import { cloneFlags, idMap, unshareArgs } from './namespaces.ts';

export interface LaunchOptions {
  /** The init's TypeScript entry point (step 03's or step 04's). */
  init: string;
  hooks?: JailHook[];
  /** Called once the target runs (the init says "running"), with the init's host PID; never if setup fails. */
  onStarted?: (initPid: number) => void;
  /** Lines the init sends after "go" other than "error …" (e.g. step 08's lab results). */
  onMessage?: (line: string) => void;
  /** After "go": how to send the init a line (step 10's exec requests; the init must keep its channel). */
  onChannel?: (send: (line: string) => void) => void;
  /** With a user namespace and a root launcher: the host IDs root inside maps to (default: jailIdRanges()). */
  idRanges?: IdRanges;
  /** An init started in advance (parkInit), in the same namespaces: no spawn, no ID maps; the hooks run around it. */
  parked?: StartedInit;
}

/**
 * Node starts a pool of four V8 worker threads and, at its first file
 * read, four libuv threads. In the jail they are the init's, count
 * against pids.max, and push the target's PID up: the init needs one of each.
 * The init makes no TLS connection: it starts without NODE_EXTRA_CA_CERTS
 * (nodeChildEnv), and the target's environment is the spec's, not ours.
 */
const INIT_NODE_FLAGS = ['--v8-pool-size=1'];
const INIT_NODE_ENV = { UV_THREADPOOL_SIZE: '1' };

/** V8 compiles a function when it first runs; --no-lazy compiles them all at the start instead. */
export const EAGER = ['--no-lazy'];

/** How long PID 1 gets to stop the jail after SIGTERM before it is killed. */
const STOP_GRACE_MS = 3000;

export async function launchJail(spec: JailSpec, opts: LaunchOptions): Promise<number> {
  requireTools('unshare', 'setpriv');
  const hooks = opts.hooks ?? [];
  const parked = opts.parked;
  if (parked && parked.namespaces.join() !== spec.namespaces.join()) {
    throw new JailError(`the waiting init has the namespaces ${parked.namespaces.join(' ')}, this jail wants ${spec.namespaces.join(' ')}`, 'this is a bug in the pool: it must hand out only inits of the same shape');
  }
  await using cleanup = new CleanupStack();
  let child: ChildProcess | undefined = parked?.child;
  let initPid = 0;
  let started = false;
  let stopping: NodeJS.Signals | undefined;
  let killedHard = false;

  // Ctrl-C may come at any moment, also while hooks are still making things:
  // it must end up unwinding the same stack, never kill the launcher outright.
  const stop = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = sig;
    if (!started) return void child?.kill('SIGKILL'); // nothing runs yet; setup notices `stopping`
    // PID 1 ignores signals it has no handler for; ours forwards them to the target
    process.kill(initPid, sig === 'SIGINT' ? 'SIGINT' : 'SIGTERM');
    setTimeout(() => {
      try {
        process.kill(initPid, 'SIGKILL');
        killedHard = true;
      } catch {}
    }, STOP_GRACE_MS).unref();
  };
  const interrupted = () => new JailError(`interrupted by ${stopping} before the jail started; everything made so far is undone`, undefined, 128 + (signalNumber(stopping!) ?? 0));
  const prepareAll = async () => {
    for (const hook of hooks) {
      await hook.prepare?.(spec, cleanup);
      if (stopping) throw interrupted();
    }
  };

  // `return await`, not `return`: the cleanup stack must unwind after the jail ends, not when the promise is made
  return await withSignals(stop, async () => {
    let init: StartedInit;
    if (parked) {
      init = parked;
      heading(`Starting the jail: clone(${cloneFlags(spec.namespaces)})`);
      explain(`its init (PID ${parked.pid} on the host) was started before this jail was asked for, and waits for "go" with the jail's spec`);
    } else {
      await prepareAll();
      try {
        init = await startInit(spec, opts.init, (c) => (child = c));
      } catch (err) {
        if (stopping) throw interrupted();
        throw err;
      }
      if (stopping) {
        init.child.kill('SIGKILL');
        await init.exited;
        throw interrupted();
      }
    }
    initPid = init.pid;
    try {
      if (!parked && spec.namespaces.includes('user')) writeIdMaps(initPid, opts.idRanges);
      if (parked) await prepareAll(); // the init exists already: hooks make the host's side around it
      for (const hook of hooks) {
        await hook.attach?.(spec, initPid, cleanup);
        if (stopping) throw interrupted();
      }
    } catch (err) {
      init.child.kill('SIGKILL'); // the init waits for "go": it has nothing to stop gracefully
      await init.exited;
      throw err;
    }
    started = true;
    const { channel } = init;
    channel.write(parked ? `go ${JSON.stringify(spec)}\n` : 'go\n');
    opts.onChannel?.((line) => {
      if (!channel.destroyed && channel.writable) channel.write(line + '\n');
    });
    // after "go" the init says "running" once the target runs, "error …" if its setup failed, or reports (onMessage)
    let failure: { message: string; code?: string } | undefined;
    for await (const line of init.messages) {
      if (line === 'running') opts.onStarted?.(initPid);
      else if (line.startsWith('error ')) failure ??= JSON.parse(line.slice(6));
      else opts.onMessage?.(line);
    }
    const status = await init.exited;
    if (failure) throw new JailError(`the jail could not be set up: ${failure.message}`, hintFor(failure.code));
    for (const hook of hooks) await hook.report?.(spec);
    // util-linux 2.38's unshare exits 1 when its child is SIGKILLed; say what happened
    return killedHard ? 128 + 9 : status;
  });
}

/** An init in its new namespaces, waiting for "go": its host PID, its channel (fd 3) and its end. */
export interface StartedInit {
  pid: number;
  namespaces: Namespace[];
  child: ChildProcess;
  channel: Readable & Writable;
  messages: AsyncGenerator<string>;
  /** Its exit status, as the launcher reports it. */
  exited: Promise<number>;
}

/**
 * setpriv + unshare + the init; resolves once the init said its PID. With
 * `track` (a jail launched now) the child is told at once, for Ctrl-C, and
 * the clone is shown; without it (parkInit) nothing is shown.
 */
async function startInit(spec: JailSpec, entry: string, track?: (child: ChildProcess) => void): Promise<StartedInit> {
  // a parked init (no `track`) compiles its whole script as it starts, off the jail's path: after "go" no function waits for its compile
  const init = await nodeArgs(entry, track ? INIT_NODE_FLAGS : [...INIT_NODE_FLAGS, ...EAGER]);
  const unshare = unshareArgs(spec.namespaces);
  if (track) {
    heading(`Starting the jail: clone(${cloneFlags(spec.namespaces)})`);
    showCommand(equivalentCommand(spec, unshare));
  }
  // setpriv --pdeathsig: if the launcher dies (even by SIGKILL) unshare gets
  // SIGKILL; --kill-child passes it to the init; when PID 1 of a PID
  // namespace dies, the kernel kills every process in it. No orphan jails.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...unshare, '--', process.execPath, ...init], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    env: { ...nodeChildEnv(), ...INIT_NODE_ENV, JAIL_SPEC: JSON.stringify(spec) },
  });
  track?.(child);
  const exited = new Promise<number>((resolve) => child.on('close', (code, sig) => resolve(code ?? 128 + (signalNumber(sig ?? 'SIGKILL') ?? 9))));
  child.on('error', () => {});
  const channel = child.stdio[3] as Readable & Writable;
  channel.on('error', () => {}); // an init that died: its exit status tells, not an EPIPE
  const messages = lines(channel);
  const first = await messages.next();
  if (first.done || !first.value.startsWith('pid ')) {
    child.kill('SIGKILL');
    const status = await exited;
    throw new JailError(`the jail's init did not start (exit status ${status})`, 'run npm run doctor to check this machine');
  }
  return { pid: Number(first.value.slice(4)), namespaces: [...spec.namespaces], child, channel, messages, exited };
}

/**
 * An init started before its jail is known (step 10's pool): in the
 * namespaces of `spec`, its ID maps written, waiting. launchJail with
 * `parked` finishes it: the hooks, then "go" with the real spec. If this
 * process dies first, the init dies with it (--pdeathsig).
 */
export async function parkInit(spec: JailSpec, init: string, idRanges?: IdRanges): Promise<StartedInit> {
  requireTools('unshare', 'setpriv');
  const started = await startInit(spec, init);
  try {
    if (spec.namespaces.includes('user')) writeIdMaps(started.pid, idRanges);
  } catch (err) {
    started.child.kill('SIGKILL');
    await started.exited;
    throw err;
  }
  return started;
}

/**
 * The same jail by hand. Step 03's init is exactly `unshare --root
 * [--mount-proc]`; step 04's does more (see its list) before it runs CMD.
 */
function equivalentCommand(spec: JailSpec, unshare: string[]): string {
  const proc = spec.namespaces.includes('pid') && spec.namespaces.includes('mount') ? ['--mount-proc'] : [];
  if (spec.pivot) return `${shellQuote([...unshare, '--'])} <the god process, doing the list above> ${shellQuote(spec.command)}`;
  return shellQuote([...unshare, `--root=${spec.rootfs}`, ...proc, '--', ...spec.command]);
}

/** Root inside, someone unprivileged outside. Written once, from outside, before the init goes on. */
function writeIdMaps(pid: number, given?: IdRanges): void {
  const uid = process.getuid!();
  const gid = process.getgid!();
  const ranges = given ?? (isRoot() ? jailIdRanges() : { uid: { base: uid, count: 1 }, gid: { base: gid, count: 1 }, source: 'you' });
  const uidMap = idMap(uid, isRoot(), ranges.uid);
  const gidMap = idMap(gid, isRoot(), ranges.gid);
  explain(`user namespace: root inside is ${isRoot() ? `uid ${uidMap.split(' ')[1]}` : `you (uid ${uid})`} outside`);
  if (!isRoot()) {
    // an unprivileged writer must give up setgroups(2) first, or it could drop supplementary groups used as denials
    showCommand(`echo deny > /proc/${pid}/setgroups`);
    writeFileSync(`/proc/${pid}/setgroups`, 'deny');
  }
  showCommand(`echo '${uidMap.trim()}' > /proc/${pid}/uid_map`);
  writeFileSync(`/proc/${pid}/uid_map`, uidMap);
  showCommand(`echo '${gidMap.trim()}' > /proc/${pid}/gid_map`);
  writeFileSync(`/proc/${pid}/gid_map`, gidMap);
}

function hintFor(code: string | undefined): string | undefined {
  if (code === 'EPERM' || code === 'EACCES') return "inside a user namespace some mounts and device nodes are not allowed, and the jail's root cannot open files of unmapped owners: check what you passed in (--device, binds)";
  if (code === 'EBUSY') return 'something still uses that mount; run npm run clean';
  return 'run npm run doctor, and npm run clean if an earlier run was killed';
}

/** The lines a stream delivers, as an async iterator. */
async function* lines(stream: Readable): AsyncGenerator<string> {
  let buf = '';
  for await (const chunk of stream) {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) !== -1) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}
