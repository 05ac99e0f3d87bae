// What people type into what the kernel reads. --memory 64M becomes the
// bytes memory.max takes, --cpus 0.5 a share of CPU time, --io-write-bps
// /dev/sda:10MB/s a MAJ:MIN and bytes per second. Every flag is checked here,
// before anything is made: `--memory lots` is one sentence and leaves nothing
// behind. (k, M, G and T are powers of 1024, as in docker run --memory 64m.)
import { readFileSync, statSync } from 'node:fs';
import type { FlagSpecs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import type { DeviceRate, Limits } from './limits.ts';

/** Powers of 1024, as `docker run --memory 64m` and the kernel's own "64M" mean. */
const BINARY_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** The most PIDs a Linux system can ever have (PID_MAX_LIMIT); pids.max refuses more. */
const PID_MAX_LIMIT = 4_194_304;

function flagError(flag: string, problem: string, example: string, hint?: string): JailError {
  return new JailError(`${flag}: ${problem}; use e.g. ${example}`, hint, 2);
}

function bytesOf(text: string): number | undefined {
  const m = /^\s*(-?\d*\.?\d+)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  return m ? Math.floor(Number(m[1]) * BINARY_UNITS[m[2]!.toLowerCase()]!) : undefined;
}

/** '64M', '1.5G', '512k', '1048576' -> bytes (k, M, G, T are powers of 1024). */
export function parseSize(text: string, flag = '--memory'): number {
  const bytes = bytesOf(text);
  const hint = 'a size is bytes with an optional k, M, G or T (powers of 1024), as in docker run --memory';
  if (bytes === undefined) throw flagError(flag, `'${text}' is not a size`, '64M or 1.5G', hint);
  if (bytes <= 0) throw flagError(flag, `'${text}' is not more than zero`, '64M or 1.5G', hint);
  return bytes;
}

/** '10MB/s', '1M', '512k/s', '1048576' -> bytes per second. */
export function parseRate(text: string, flag = '--io-write-bps'): number {
  const bytes = bytesOf(text.replace(/\/s\s*$/i, ''));
  const hint = 'a rate is bytes per second with an optional k, M or G (powers of 1024) and an optional /s';
  if (bytes === undefined) throw flagError(flag, `'${text}' is not a rate`, '10MB/s or 512k', hint);
  if (bytes <= 0) throw flagError(flag, `'${text}' is not more than zero`, '10MB/s or 512k', hint);
  return bytes;
}

/** '0.5' -> 0.5: a share of one CPU's time, between 0.01 and the number of CPUs. */
export function parseCpus(text: string, flag = '--cpus'): number {
  const m = /^\s*(-?\d*\.?\d+)\s*$/.exec(text);
  if (!m) throw flagError(flag, `'${text}' is not a number of CPUs`, '0.5 or 2');
  const cpus = Number(m[1]);
  const online = onlineCpus().length;
  // 0.01 CPU is a 1 ms quota per 100 ms period, the smallest quota the kernel takes.
  if (cpus < 0.01 || cpus > online) {
    throw flagError(flag, `'${text}' is out of range: this machine has ${online} CPU${online === 1 ? '' : 's'}, so 0.01 to ${online}`, '0.5');
  }
  return cpus;
}

/** '0', '0-1', '0,1' -> the kernel's CPU list format, checked against the CPUs that are online. */
export function parseCpuset(text: string, flag = '--cpuset'): string {
  const cpus = parseCpuList(text);
  if (!cpus) throw flagError(flag, `'${text}' is not a list of CPUs`, '0, 0-1 or 0,1');
  const online = onlineCpus();
  const missing = cpus.filter((cpu) => !online.includes(cpu));
  if (missing.length) {
    throw flagError(flag, `CPU ${missing.join(',')} is not online (this machine has CPUs ${formatCpuList(online)})`, formatCpuList(online.slice(0, 1)));
  }
  return formatCpuList(cpus);
}

/** '64' -> 64 processes (threads count too: the kernel rations tasks). */
export function parsePids(text: string, flag = '--pids'): number {
  if (!/^\s*-?\d+\s*$/.test(text)) throw flagError(flag, `'${text}' is not a number of processes`, '64');
  const pids = Number(text);
  if (pids < 1) throw flagError(flag, `'${text}' is not more than zero`, '64');
  if (pids >= PID_MAX_LIMIT) throw flagError(flag, `'${text}' is more than Linux has PIDs (${PID_MAX_LIMIT})`, '64');
  return pids;
}

/** 'DEV:RATE', DEV a block device path or MAJ:MIN: '/dev/sda:10MB/s', '8:0:1M'. */
export function parseDeviceRate(text: string, flag = '--io-write-bps'): DeviceRate {
  const example = '/dev/sda:10MB/s or 8:0:10MB/s';
  const cut = text.lastIndexOf(':');
  if (cut <= 0) throw flagError(flag, `'${text}' is not DEV:RATE`, example);
  const device = text.slice(0, cut);
  const bytes = parseRate(text.slice(cut + 1), flag);
  if (/^\d+:\d+$/.test(device)) return { dev: device, bytes };
  if (!device.startsWith('/')) throw flagError(flag, `'${device}' is not a block device path or MAJ:MIN`, example);
  let st;
  try {
    st = statSync(device, { bigint: true });
  } catch {
    throw flagError(flag, `${device} does not exist`, example, 'lsblk lists the block devices, with MAJ:MIN');
  }
  if (!st.isBlockDevice()) throw flagError(flag, `${device} is not a block device`, example, 'lsblk lists the block devices, with MAJ:MIN');
  return { dev: majorMinor(st.rdev), bytes, path: device };
}

/** glibc's major()/minor(): a dev_t keeps 12+20 bits of major and 8+24 of minor, interleaved. */
export function majorMinor(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

function parseCpuList(text: string): number[] | undefined {
  const cpus = new Set<number>();
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const [from, to] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (to < from) return undefined;
    for (let cpu = from; cpu <= to; cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}

function formatCpuList(cpus: number[]): string {
  const ranges: string[] = [];
  for (let i = 0; i < cpus.length; i++) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    ranges.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j;
  }
  return ranges.join(',');
}

function onlineCpus(): number[] {
  return parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')) ?? [0];
}

/** Bytes as a person reads them: 64M, 1.5G. */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [['G', 2 ** 30], ['M', 2 ** 20], ['k', 2 ** 10]] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))}${unit}`;
  }
  return `${bytes}B`;
}

// ---------------------------------------------------------------------------
// The flags of step 06 (and of every step that imports them).

/** The flags of step 06, for lib/cli.ts's parseArgs. */
export const cgroupFlags = {
  cpus: { type: 'string', value: 'N', help: 'CPU time, in CPUs (0.5 = half of one CPU), like docker run --cpus' },
  cpuset: { type: 'string', value: 'LIST', help: 'the CPUs the jail may run on: 0, 0-1 or 0,1' },
  memory: { type: 'string', value: 'SIZE', help: 'memory, e.g. 64M or 1.5G, with no swap beyond it' },
  pids: { type: 'string', value: 'N', help: 'processes and threads at once: a fork bomb stops here' },
  'io-read-bps': { type: 'list', value: 'DEV:RATE', help: 'read speed of a block device, e.g. /dev/sda:10MB/s' },
  'io-write-bps': { type: 'list', value: 'DEV:RATE', help: 'write speed of a block device, e.g. /dev/sda:10MB/s' },
} satisfies FlagSpecs;

export interface LimitFlags {
  cpus?: string;
  cpuset?: string;
  memory?: string;
  pids?: string;
  'io-read-bps'?: string[];
  'io-write-bps'?: string[];
}

export function limitsFromFlags(flags: LimitFlags): Limits {
  const limits: Limits = {};
  if (flags.cpus !== undefined) limits.cpus = parseCpus(flags.cpus);
  if (flags.cpuset !== undefined) limits.cpuset = parseCpuset(flags.cpuset);
  if (flags.memory !== undefined) limits.memory = parseSize(flags.memory, '--memory');
  if (flags.pids !== undefined) limits.pids = parsePids(flags.pids);
  if (flags['io-read-bps']?.length) limits.ioReadBps = flags['io-read-bps'].map((f) => parseDeviceRate(f, '--io-read-bps'));
  if (flags['io-write-bps']?.length) limits.ioWriteBps = flags['io-write-bps'].map((f) => parseDeviceRate(f, '--io-write-bps'));
  return limits;
}

/** docker run --device: a host device node in the jail's /dev. */
export const deviceFlag = {
  device: { type: 'list', value: 'PATH', help: "a host block or character device to put in the jail's /dev (docker run --device), e.g. to test --io-write-bps" },
} as const satisfies FlagSpecs;

/** Only device nodes: --device /etc/passwd would be a bind mount in disguise. */
export function checkDevices(paths: string[]): string[] {
  for (const p of paths) {
    let ok = false;
    try {
      const st = statSync(p);
      ok = st.isBlockDevice() || st.isCharacterDevice();
    } catch {}
    if (!ok) throw new JailError(`--device ${p}: not a device node on this host`, 'e.g. --device /dev/loop0 (see losetup --find --show FILE)', 2);
  }
  return paths;
}

/** The v1 device-cgroup rule that lets a jail open a device given with --device: 'b 7:0 rwm' for /dev/loop0. */
export function deviceRule(path: string): string {
  const st = statSync(path, { bigint: true });
  return `${st.isBlockDevice() ? 'b' : 'c'} ${majorMinor(st.rdev)} rwm`;
}
