// Which host IDs a user namespace's root and users map to. Root inside is
// an unprivileged uid outside only if that uid is nobody's: not a user of
// /etc/passwd, not a range /etc/subuid gives someone, and not one useradd
// will give the next user it makes. So: root's own entry in /etc/subuid and
// /etc/subgid if it has one, else a range above everything useradd hands out.
import { readFileSync } from 'node:fs';
import { JailError } from '../../lib/errors.ts';

/** IDs base…base+count-1 on the host are 0…count-1 inside. */
export interface IdRange {
  base: number;
  count: number;
}

export interface IdRanges {
  uid: IdRange;
  gid: IdRange;
  /** Where the ranges come from, in words. */
  source: string;
}

/** 65536 IDs: the 16-bit range every program expects (nobody is 65534). */
const COUNT = 65536;

/**
 * 0x70000000 (1879048192): above shadow's SUB_UID_MAX (600100000, so
 * useradd never hands it to a user's /etc/subuid entry — 100000-165535 is
 * exactly what the first user gets), above systemd-nspawn's container ranges
 * (0x00080000-0x6FFFFFFF), below systemd's "foreign" range (0x7FFE0000) and
 * below 2^31, where signed 32-bit uid_t bugs begin.
 */
export const JAIL_ID_BASE = 0x70000000;

interface SubordinateEntry {
  owner: string;
  base: number;
  count: number;
}

function readSubordinate(file: string): SubordinateEntry[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((l) => l.trim().split(':'))
    .filter((f) => f.length === 3 && /^\d+$/.test(f[1]!) && /^\d+$/.test(f[2]!))
    .map(([owner, base, count]) => ({ owner: owner!, base: Number(base), count: Number(count) }));
}

/** The numeric IDs of /etc/passwd (uids) or /etc/group (gids). */
function knownIds(file: string, field: number): number[] {
  try {
    return readFileSync(file, 'utf8').split('\n').map((l) => Number(l.split(':')[field])).filter((n) => Number.isInteger(n));
  } catch {
    return [];
  }
}

const overlaps = (a: IdRange, b: IdRange): boolean => a.base < b.base + b.count && b.base < a.base + a.count;

/** The host IDs the jail's root and users map to. */
export function jailIdRanges(): IdRanges {
  const root = (e: SubordinateEntry) => e.owner === 'root' || e.owner === '0';
  const subuid = readSubordinate('/etc/subuid');
  const subgid = readSubordinate('/etc/subgid');
  const u = subuid.find(root);
  const g = subgid.find(root);
  if (u && g) {
    return { uid: { base: u.base, count: Math.min(u.count, COUNT) }, gid: { base: g.base, count: Math.min(g.count, COUNT) }, source: "root's entries in /etc/subuid and /etc/subgid" };
  }
  const ours: IdRange = { base: JAIL_ID_BASE, count: COUNT };
  const taken = [
    ...subuid.filter((e) => overlaps(e, ours)).map((e) => `/etc/subuid gives ${e.base}-${e.base + e.count - 1} to ${e.owner}`),
    ...subgid.filter((e) => overlaps(e, ours)).map((e) => `/etc/subgid gives ${e.base}-${e.base + e.count - 1} to ${e.owner}`),
    ...knownIds('/etc/passwd', 2).filter((id) => overlaps({ base: id, count: 1 }, ours)).map((id) => `uid ${id} is a user in /etc/passwd`),
    ...knownIds('/etc/group', 2).filter((id) => overlaps({ base: id, count: 1 }, ours)).map((id) => `gid ${id} is a group in /etc/group`),
  ];
  if (taken.length) {
    throw new JailError(`the jail's ID range ${ours.base}-${ours.base + COUNT - 1} is not free: ${taken[0]}`, `give root a range of its own: echo root:BASE:65536 | sudo tee -a /etc/subuid /etc/subgid`);
  }
  return { uid: ours, gid: ours, source: `0x${ours.base.toString(16)}, a range no user, no /etc/subuid entry and no useradd can have` };
}
