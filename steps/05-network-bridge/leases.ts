// Leases: which jail has which address, across processes.
//
// A lease is the file ${runDir()}/leases/<address>, created with O_EXCL ('wx')
// so that two launchers can never both create it, holding the launcher's pid
// and start time as JSON. A lease whose launcher is gone is stale and may be
// taken again: the start time tells a live launcher from a new process that
// got the same pid (runDir survives reboots). Everything that changes leases
// or the shared network holds the lock on the leases directory.
import { closeSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { flock, LOCK_EX, LOCK_NB } from '../../lib/libc.ts';
import { explain } from '../../lib/output.ts';
import { processStart } from '../../lib/proc.ts';
import { ensureDir, runDir } from '../../lib/state.ts';
import { formatIPv4, parseIPv4, sizeOf, vethNames, type Subnet } from './addresses.ts';

export interface Lease {
  ip: string;
  /** The launcher that holds it. */
  pid: number;
  /** Its start time in clock ticks after boot, field 22 of /proc/PID/stat. */
  started: number;
  jail: string;
  /** The host end of the jail's veth pair. */
  veth: string;
}

const leaseDir = (): string => ensureDir(join(runDir(), 'leases'));

export const isLive = (lease: Lease): boolean => lease.pid > 0 && processStart(lease.pid) === lease.started;

export function readLease(ip: string): Lease | undefined {
  let text: string;
  try {
    text = readFileSync(join(leaseDir(), ip), 'utf8');
  } catch {
    return undefined;
  }
  try {
    return { ...(JSON.parse(text) as Lease), ip };
  } catch {
    return { ip, pid: 0, started: 0, jail: '?', veth: '' }; // unreadable: nobody can prove it alive
  }
}

export function readLeases(): Lease[] {
  return readdirSync(leaseDir())
    .filter((f) => parseIPv4(f) !== undefined)
    .map(readLease)
    .filter((l): l is Lease => l !== undefined);
}

export function dropLease(ip: string): void {
  rmSync(join(leaseDir(), ip), { force: true });
}

export function inUse(lease: Lease): JailError {
  return new JailError(`${lease.ip} is already in use by jail ${lease.jail} (launcher pid ${lease.pid})`, 'pick another --ip, or leave it out to get the next free address', 2);
}

function* candidates(subnet: Subnet, wanted: string | undefined): Generator<number> {
  if (wanted) return yield parseIPv4(wanted)!;
  for (let n = subnet.network + 2; n < subnet.network + sizeOf(subnet) - 1; n++) yield n;
}

/** Takes `wanted`, or the lowest free address; call under the network lock. */
export function takeLease(subnet: Subnet, wanted: string | undefined, jail: string): Lease {
  for (const n of candidates(subnet, wanted)) {
    const ip = formatIPv4(n);
    const held = readLease(ip);
    if (held && isLive(held)) {
      if (wanted) throw inUse(held);
      continue;
    }
    if (held) {
      explain(`reclaiming ${ip}: its launcher (pid ${held.pid}, jail ${held.jail}) is gone`);
      dropLease(ip);
    }
    const lease: Lease = { ip, pid: process.pid, started: processStart(process.pid)!, jail, veth: vethNames(subnet, ip).host };
    try {
      writeFileSync(join(leaseDir(), ip), JSON.stringify(lease) + '\n', { flag: 'wx' });
      return lease;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (wanted) throw inUse(readLease(ip) ?? lease);
    }
  }
  throw new JailError(`no free address left in ${subnet.cidr}`, 'stop a jail, or use a bigger subnet: JAIL_SUBNET=10.231.0.0/16', 2);
}

/**
 * flock(2), not a lock file: the kernel drops the lock when its holder dies,
 * so a killed launcher can never leave the network locked.
 */
export async function withNetworkLock<T>(body: () => Promise<T>): Promise<T> {
  const fd = openSync(leaseDir(), 'r'); // Node opens with O_CLOEXEC: the ip/iptables children do not inherit the lock
  try {
    const deadline = Date.now() + 30_000;
    while (!flock(fd, LOCK_EX | LOCK_NB)) {
      if (Date.now() > deadline) throw new JailError('another jail has held the network lock for 30 s', 'wait for it to finish starting or stopping; if none is running, sudo npm run clean');
      await new Promise((r) => setTimeout(r, 20));
    }
    return await body();
  } finally {
    closeSync(fd); // closing the only descriptor of the open file releases the flock
  }
}
