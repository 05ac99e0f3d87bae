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
import { shq } from '../../lib/sh.ts';
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
    // on every syscall (this VM runs only our own tests), no relocation at boot.
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
    // q35: virtio-pci with MSI-X, no slow ACPI interrupt-link setup at boot.
    '-machine', 'q35',
    // One host thread for both vCPUs: with multi-threaded TCG every TLB
    // shootdown (each fork, exec and exit) stops all vCPUs, and the tests start
    // processes all the time: one step run took 17 s this way, 31-47 s that way.
    '-accel', process.env.JAIL_VM_ACCEL || 'tcg,thread=single',
    '-cpu', process.env.JAIL_VM_CPU || 'max',
    '-smp', String(opts.cpus),
    '-m', `${opts.memoryMiB}M`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    '-kernel', k.vmlinux ?? k.vmlinuz,
    '-initrd', initrd,
    '-append', append,
    '-virtfs', `local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap`,
    // passthrough: the guest's chown and chmod in the repo happen on the host too.
    '-virtfs', `local,path=${qemuValue(opts.repo)},mount_tag=repo,security_model=passthrough,multidevs=remap`,
    '-virtfs', `local,path=${qemuValue(k.modules)},mount_tag=modules,security_model=none,readonly=on`,
    '-fw_cfg', `name=opt/build-a-jail/env,string=${qemuValue(guestEnv(opts, nonce))}`,
  ];
}

/** QEMU's option syntax: a comma inside a value is written twice. */
const qemuValue = (value: string): string => value.replace(/,/g, ',,');

/** The sh file /init sources: the nonce, the repo, and the command as a script. */
function guestEnv(opts: VmOptions, nonce: string): string {
  const env = Object.fromEntries(Object.entries({ HOME: '/root', PATH: GUEST_PATH, LANG: 'C.UTF-8', ...opts.env }).filter(([k]) => /^[A-Za-z_]\w*$/.test(k)));
  const script = [
    `export ${Object.entries(env).map(([k, v]) => `${k}=${shq(v)}`).join(' ')}`,
    `cd ${shq(opts.repo)} || exit 125`,
    `exec ${opts.command.map(shq).join(' ')}`,
  ].join('\n');
  return [`JAIL_NONCE=${nonce}`, `JAIL_REPO=${shq(opts.repo)}`, `JAIL_DEBUG=${opts.debug ? 1 : 0}`, `JAIL_SCRIPT=${shq(script)}`, ''].join('\n');
}

// shq (lib/sh.ts) quotes a word for sh; re-exported for the harness tests
export { shq };

// ---------------------------------------------------------------------------
// Running QEMU: stream the console, find the marker lines, enforce the timeout.

function supervise(args: string[], nonce: string, opts: VmOptions, abort: AbortSignal): Promise<VmResult> {
  const started = Date.now();
  const result: VmResult = { status: undefined, timedOut: false, bootMs: undefined, guestBootS: undefined };
  // stdin is /dev/null: the host's terminal must not be switched to raw mode by QEMU.
  const qemu = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  qemu.stderr!.on('data', (chunk: Buffer) => passQemuErrors(chunk.toString('utf8'), opts.log));
  const serial = new ConsoleReader(nonce, opts.output, (kind, value) => {
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
  // setEncoding, not chunk.toString(): a UTF-8 character may be split across chunks.
  qemu.stdout!.setEncoding('utf8');
  qemu.stdout!.on('data', (text: string) => serial.push(text));

  const timer = setTimeout(() => {
    result.timedOut = true;
    opts.log(`timed out after ${opts.timeoutMs / 1000} s: stopping the VM`);
    stop(qemu);
  }, opts.timeoutMs);
  const onAbort = () => stop(qemu);
  abort.addEventListener('abort', onAbort);
  if (abort.aborted) onAbort(); // the signal came while we were building the initramfs

  return new Promise((resolve, reject) => {
    qemu.on('error', (err) => reject(new JailError(`cannot start QEMU: ${err.message}`, 'apt-get install --no-install-recommends qemu-system-x86')));
    qemu.on('close', () => {
      clearTimeout(timer);
      abort.removeEventListener('abort', onAbort);
      serial.end();
      resolve(result);
    });
  });
}

/** QEMU's own warnings matter; its note that we stopped it (timeout, Ctrl-C) does not. */
function passQemuErrors(text: string, log: (line: string) => void): void {
  for (const line of text.split('\n')) {
    if (line && !/terminating on signal/.test(line)) log(`qemu: ${line}`);
  }
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
  /** The current line's text that has not been passed on yet. */
  #pending = '';
  /** Part of the current line has been passed on: a marker on it needs a newline first. */
  #midLine = false;
  #exited = false;
  readonly #marker: RegExp;

  constructor(
    readonly nonce: string,
    readonly output: (text: string) => void,
    readonly onMarker: (kind: 'ready' | 'exit', value: string) => void,
  ) {
    this.#marker = new RegExp(`${nonce} (ready|exit) ([\\d.]+)$`);
  }

  push(text: string): void {
    // After "exit" come only the kernel's power-off messages: the output must
    // end with the command's own last lines (CI reads the test summary there).
    if (this.#exited) return;
    this.#pending += text;
    let nl: number;
    while (!this.#exited && (nl = this.#pending.indexOf('\n')) !== -1) {
      const line = this.#pending.slice(0, nl);
      this.#pending = this.#pending.slice(nl + 1);
      this.#line(line);
    }
    if (!this.#exited) this.#passPartial();
  }

  end(): void {
    if (this.#pending && !this.#exited) this.#emit(this.#pending);
    this.#pending = '';
  }

  #emit(text: string): void {
    if (!text) return;
    this.output(text);
    this.#midLine = !text.endsWith('\n');
  }

  /** A line ending with a marker: the command's unterminated last line may precede it. */
  #line(raw: string): void {
    // The tty turns \n into \r\n.
    const line = raw.replace(/\r+$/, '');
    const m = line.match(this.#marker);
    if (!m) return this.#emit(line + '\n');
    const before = line.slice(0, m.index);
    if (before || this.#midLine) this.#emit(before + '\n');
    if (m[1] === 'exit') this.#exited = true;
    this.onMarker(m[1] as 'ready' | 'exit', m[2]!);
  }

  /** Passes on the partial line, except a tail that may be a marker's start or the \r of a \r\n. */
  #passPartial(): void {
    const keep = Math.min(this.#possibleMarkerStart(this.#pending), this.#pending.search(/\r*$/));
    this.#emit(this.#pending.slice(0, keep));
    this.#pending = this.#pending.slice(keep);
  }

  /** Where in a partial line a marker might begin (its length when nowhere). */
  #possibleMarkerStart(partial: string): number {
    for (let i = Math.max(0, partial.length - this.nonce.length - 16); i < partial.length; i++) {
      const tail = partial.slice(i);
      if (this.nonce.startsWith(tail) || tail.startsWith(this.nonce)) return i;
    }
    return partial.length;
  }
}
