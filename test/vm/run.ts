// npm run test:vm [-- [N…] [flags] [-- CMD ARGS…]]
// Runs the cgroup tests (or any command) inside a QEMU VM with pure cgroup v2,
// streams its console, and exits with the command's exit status (124 when it
// timed out, 125 when the VM never said, 130 on Ctrl-C).
//   npm run test:vm                    node --import tsx test/run.ts 6, in the VM
//   npm run test:vm -- 6 7             the tests of steps 6 and 7
//   npm run test:vm -- -- sh -c 'cat /proc/self/cgroup'
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, usage, type FlagSpecs } from '../../lib/cli.ts';
import { JailError, runMain } from '../../lib/errors.ts';
import { colour } from '../../lib/output.ts';
import { NO_STATUS, runInVm, TIMED_OUT } from './vm.ts';

const flags = {
  timeout: { type: 'string', value: 'SECONDS', help: 'stop the VM after this long (default 1800, or $JAIL_VM_TIMEOUT)' },
  memory: { type: 'string', value: 'MIB', help: "the VM's memory in MiB (default 2048)" },
  cpus: { type: 'string', value: 'N', help: 'virtual CPUs (default 2)' },
  repo: { type: 'string', value: 'DIR', help: 'the directory shared read-write, where the command starts (default: this repo)' },
  debug: { type: 'boolean', help: 'show the QEMU command, kernel messages and a trace of the VM\'s /init' },
} satisfies FlagSpecs;

const TITLE = 'test:vm — run the tests (or a command) in a QEMU VM with pure cgroup v2';
const ENVIRONMENT = `
environment:
  JAIL_VM_TIMEOUT=SECONDS     as --timeout
  JAIL_VM_DEBUG=1             as --debug
  JAIL_CACHE=DIR              the kernel and initramfs go to DIR/vm (default /var/cache/build-a-jail)
  JAIL_VM_KERNEL_PACKAGE=PKG  boot this Debian linux-image package instead of linux-image-amd64's
  JAIL_VM_ACCEL, JAIL_VM_CPU  QEMU's -accel and -cpu (default tcg,thread=single and max)
  JAIL_*, CI, DEBUG, NO_COLOR, FORCE_COLOR are passed to the command; JAIL_VM=1 tells it where it runs.`;
const SYNOPSIS = 'npm run test:vm -- [STEP…] [flags] [-- CMD ARGS…]';
const repoDir = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

/** What the guest runs when no command is given: the tests of these steps. */
const defaultCommand = (steps: string[]): string[] => ['node', '--import', 'tsx', 'test/run.ts', ...(steps.length ? steps : ['6'])];

/** Leading step numbers (`npm run test:vm -- 6 7`) are a shorthand; the rest are flags. */
function splitSteps(argv: string[]): { steps: string[]; rest: string[] } {
  let i = 0;
  while (i < argv.length && /^\d+$/.test(argv[i]!)) i++;
  return { steps: argv.slice(0, i), rest: argv.slice(i) };
}

function positive(name: string, value: string | undefined, fallback: number, whole = true): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (whole && !Number.isInteger(n))) {
    throw new JailError(`--${name} must be a positive ${whole ? 'whole ' : ''}number, not '${value}'`, undefined, 2);
  }
  return n;
}

/** The host's settings that the guest's command should see too. */
function passedEnv(): Record<string, string> {
  const env: Record<string, string> = { JAIL_VM: '1' };
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && (/^(JAIL_|CI$|DEBUG$|NO_COLOR$|FORCE_COLOR$)/.test(k))) env[k] = v;
  }
  // The console is a tty, so the guest would colour its output: only do that
  // when our own output is a terminal too.
  env.TERM = process.stdout.isTTY ? process.env.TERM || 'xterm' : 'dumb';
  if (!process.stdout.isTTY) Object.assign(env, { NO_COLOR: '1', FORCE_COLOR: '0' });
  return env;
}

const log = (line: string) => process.stderr.write(colour.dim(`vm: ${line}`) + '\n');

async function main(): Promise<number> {
  const { steps, rest } = splitSteps(process.argv.slice(2));
  const { flags: f, command, help } = parseArgs(rest, flags);
  if (help) {
    console.log(usage(TITLE, SYNOPSIS, flags) + '\n' + ENVIRONMENT);
    return 0;
  }
  if (steps.length && command.length) throw new JailError('give either step numbers or a command after --, not both', undefined, 2);
  if (process.getuid?.() !== 0) {
    // The tests inside need root anyway, and the repo is shared with root's ownership.
    throw new JailError('test:vm needs root: it caches a kernel under /var/cache and runs the tests as root', 'run it with sudo: sudo npm run test:vm');
  }

  const abort = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  // The VM must be gone before we exit: a signal only asks it to stop.
  const onSignal = (sig: NodeJS.Signals) => {
    signalled = sig;
    log(`${sig}: stopping the VM`);
    abort.abort();
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  const result = await runInVm(
    {
      command: command.length ? command : defaultCommand(steps),
      repo: resolve(f.repo ?? repoDir),
      memoryMiB: positive('memory', f.memory, 2048),
      cpus: positive('cpus', f.cpus, 2),
      timeoutMs: positive('timeout', f.timeout ?? process.env.JAIL_VM_TIMEOUT, 1800, false) * 1000,
      env: passedEnv(),
      debug: f.debug || process.env.JAIL_VM_DEBUG === '1',
      output: (text) => process.stdout.write(text),
      log,
    },
    abort.signal,
  );

  if (signalled) return 128 + (signalled === 'SIGINT' ? 2 : signalled === 'SIGTERM' ? 15 : 1);
  if (result.timedOut) return TIMED_OUT;
  if (result.status === undefined) {
    throw new JailError('the VM stopped without reporting the exit status of the command', 'see its last lines above; rerun with --debug to see the kernel messages and the trace of /init', NO_STATUS);
  }
  return result.status;
}

await runMain(main);
