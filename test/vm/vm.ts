// Runs one command inside a small QEMU VM that has pure cgroup v2, and returns
// its exit status. The VM boots Debian's kernel (kernel.ts) with a busybox
// initramfs (initramfs.ts), sees the host's root read-only through 9p with a
// tmpfs on top, and the repo read-write at the same path: the same node, the
// same node_modules, the same tools as the host, only the cgroup layout differs.
//
// Software emulation (TCG) because CI has no KVM: boot takes seconds and
// every process start is many times slower than on the host.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { JailError } from '../../lib/errors.ts';
import { which } from '../../lib/preflight.ts';
import { initramfs } from './initramfs.ts';
import { kernel, type Kernel } from './kernel.ts';

export interface VmOptions {
  /** argv of the command, run by the host's /bin/sh inside the VM. */
  command: string[];
  /** Shared read-write at the same path; the command starts there. */
  repo: string;
  memoryMiB: number;
  cpus: number;
  timeoutMs: number;
  /** Environment of the command, on top of HOME, PATH, TERM and LANG. */
  env: Record<string, string>;
  /** Kernel messages and a shell trace of /init on the console. */
  debug: boolean;
  /** The guest's console, as it arrives (marker lines removed). */
  output: (text: string) => void;
  /** The harness's own remarks: what it fetches, how long boot took. */
  log: (line: string) => void;
}

export interface VmResult {
  /** The command's exit status; undefined when the VM never reported one. */
  status: number | undefined;
  timedOut: boolean;
  bootMs: number | undefined;
  /** The guest's uptime when the command started: kernel + /init. */
  guestBootS: number | undefined;
}

/** Exit statuses of the harness itself, in the style of timeout(1) and shells. */
export const TIMED_OUT = 124;
export const NO_STATUS = 125;

const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Tools of the host and the Debian packages they come from. */
const TOOLS: Record<string, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  setpriv: 'util-linux',
  'apt-get': 'apt',
  'dpkg-deb': 'dpkg',
  depmod: 'kmod',
};

export function requireVmTools(): void {
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    if (!which(tool)) throw new JailError(`${tool} is missing`, `install it: apt-get install --no-install-recommends ${pkg}`);
  }
}

/**
 * Boots the VM, runs the command, and resolves once QEMU has exited. `abort`
 * (from a signal handler) stops the VM early; the promise still resolves
 * only after QEMU is gone, so nothing is left behind.
 */
export async function runInVm(opts: VmOptions, abort: AbortSignal): Promise<VmResult> {
  requireVmTools();
  const k = await kernel(opts.log);
  if (abort.aborted) return { status: undefined, timedOut: false, bootMs: undefined, guestBootS: undefined };
  const nonce = randomBytes(8).toString('hex');
  const args = qemuArgs(k, initramfs(k), opts, nonce);
  if (opts.debug) opts.log(`$ ${args.map(shq).join(' ')}`);
  return supervise(args, nonce, opts, abort);
}

// ---------------------------------------------------------------------------
// The QEMU command line.

function qemuArgs(k: Kernel, initrd: string, opts: VmOptions, nonce: string): string[] {
  const append = [
    'console=ttyS0',
    'panic=-1', // a panic reboots at once, and -no-reboot turns that into QEMU exiting
    'rdinit=/init',
    // Faster under emulation: no page-table isolation or speculation barriers
    // on every syscall (this VM runs only our own tests), no KASLR decompression shuffle.
    'mitigations=off',
    'nokaslr',
    'tsc=reliable',
    'no_timer_check',
    'i8042.noaux', // no PS/2 probing delay: there is no mouse
    ...(opts.debug ? ['loglevel=7'] : ['quiet', 'loglevel=1']),
  ].join(' ');
  // Setpriv makes QEMU die with us even if we are SIGKILLed (no stray VM).
  return [
    'setpriv', '--pdeathsig', 'KILL', '--',
    'qemu-system-x86_64',
    '-machine', 'pc,accel=tcg',
    '-cpu', 'max',
    '-smp', String(opts.cpus),
    '-m', `${opts.memoryMiB}M`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    '-kernel', k.vmlinuz,
    '-initrd', initrd,
    '-append', append,
    '-virtfs', `local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap`,
    '-virtfs', `local,path=${qemuValue(opts.repo)},mount_tag=repo,security_model=${isRoot() ? 'passthrough' : 'none'},multidevs=remap`,
    '-virtfs', `local,path=${qemuValue(k.modules)},mount_tag=modules,security_model=none,readonly=on`,
    '-fw_cfg', `name=opt/build-a-jail/env,string=${qemuValue(guestEnv(opts, nonce))}`,
  ];
}

const isRoot = () => process.getuid?.() === 0;

/** QEMU's option syntax: a comma inside a value is written twice. */
const qemuValue = (value: string): string => value.replace(/,/g, ',,');

/** The sh file /init sources: the nonce, the repo, and the command as a script. */
function guestEnv(opts: VmOptions, nonce: string): string {
  const env = { HOME: '/root', PATH: GUEST_PATH, LANG: 'C.UTF-8', ...opts.env };
  const script = [
    `export ${Object.entries(env).map(([k, v]) => `${k}=${shq(v)}`).join(' ')}`,
    `cd ${shq(opts.repo)} || exit 125`,
    `exec ${opts.command.map(shq).join(' ')}`,
  ].join('\n');
  return [`JAIL_NONCE=${nonce}`, `JAIL_REPO=${shq(opts.repo)}`, `JAIL_DEBUG=${opts.debug ? 1 : 0}`, `JAIL_SCRIPT=${shq(script)}`, ''].join('\n');
}

/** Single-quotes a word for sh. */
export const shq = (word: string): string => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

// ---------------------------------------------------------------------------
// Running QEMU: stream the console, find the marker lines, enforce the timeout.

function supervise(args: string[], nonce: string, opts: VmOptions, abort: AbortSignal): Promise<VmResult> {
  const started = Date.now();
  const result: VmResult = { status: undefined, timedOut: false, bootMs: undefined, guestBootS: undefined };
  // stdin is /dev/null: the host's terminal must not be switched to raw mode by QEMU.
  const qemu = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const console = new ConsoleReader(nonce, opts.output, (kind, value) => {
    if (kind === 'ready') {
      result.bootMs = Date.now() - started;
      result.guestBootS = Number(value);
      opts.log(`booted in ${(result.bootMs / 1000).toFixed(1)} s (kernel + init ${result.guestBootS.toFixed(1)} s of guest time); running: ${opts.command.map(shq).join(' ')}`);
    } else {
      result.status = Number(value);
      // The guest powers off right after this line; give it a moment, then make sure.
      setTimeout(() => stop(qemu), 10_000).unref();
    }
  });
  qemu.stdout!.on('data', (chunk: Buffer) => console.push(chunk.toString('utf8')));

  const timer = setTimeout(() => {
    result.timedOut = true;
    opts.log(`timed out after ${opts.timeoutMs / 1000} s: stopping the VM`);
    stop(qemu);
  }, opts.timeoutMs);
  const onAbort = () => stop(qemu);
  abort.addEventListener('abort', onAbort);

  return new Promise((resolve, reject) => {
    qemu.on('error', (err) => reject(new JailError(`cannot start QEMU: ${err.message}`, 'apt-get install --no-install-recommends qemu-system-x86')));
    qemu.on('close', () => {
      clearTimeout(timer);
      abort.removeEventListener('abort', onAbort);
      console.end();
      resolve(result);
    });
  });
}

/** SIGTERM lets QEMU quit cleanly; SIGKILL if it has not after a few seconds. */
function stop(qemu: ChildProcess): void {
  if (qemu.exitCode !== null || qemu.signalCode !== null) return;
  qemu.kill('SIGTERM');
  setTimeout(() => {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
  }, 3000).unref();
}

/**
 * Splits the serial console into the command's output and the two marker
 * lines. Output is passed on as it arrives (a test's progress dots must not
 * wait for a newline); only a line's tail that might be the start of a
 * marker is held back until it is complete.
 */
export class ConsoleReader {
  #pending = '';
  #exited = false;
  readonly #marker: RegExp;

  constructor(
    readonly nonce: string,
    readonly output: (text: string) => void,
    readonly onMarker: (kind: 'ready' | 'exit', value: string) => void,
  ) {
    this.#marker = new RegExp(`${nonce} (ready|exit) (\\S+)$`);
  }

  push(text: string): void {
    // After "exit" come only the kernel's power-off messages: the output must
    // end with the command's own last lines (CI reads the test summary there).
    if (this.#exited) return;
    // The tty turns \n into \r\n.
    this.#pending += text.replace(/\r+\n/g, '\n');
    let nl: number;
    while (!this.#exited && (nl = this.#pending.indexOf('\n')) !== -1) {
      this.#line(this.#pending.slice(0, nl));
      this.#pending = this.#pending.slice(nl + 1);
    }
    if (this.#exited) return;
    const keep = this.#possibleMarkerStart(this.#pending);
    if (keep > 0) {
      this.output(this.#pending.slice(0, keep));
      this.#pending = this.#pending.slice(keep);
    }
  }

  end(): void {
    if (this.#pending && !this.#exited) this.output(this.#pending);
    this.#pending = '';
  }

  /** A line ending with a marker: the command's unterminated last line may precede it. */
  #line(line: string): void {
    const m = line.match(this.#marker);
    if (!m) return this.output(line + '\n');
    const before = line.slice(0, m.index);
    if (before) this.output(before + '\n');
    if (m[1] === 'exit') this.#exited = true;
    this.onMarker(m[1] as 'ready' | 'exit', m[2]!);
  }

  /** How much of a partial line is surely not the start of a marker. */
  #possibleMarkerStart(partial: string): number {
    for (let i = Math.max(0, partial.length - this.nonce.length - 16); i < partial.length; i++) {
      const tail = partial.slice(i);
      if (this.nonce.startsWith(tail) || tail.startsWith(this.nonce)) return i;
    }
    return partial.length;
  }
}
