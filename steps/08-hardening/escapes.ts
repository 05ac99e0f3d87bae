// The escape lab, inside half: ways for root in a jail to reach the host,
// each tried by PID 1 after every lock of the jail is in place (the init calls
// attemptEscape). One rule keeps the lab safe: an attempt reads, or opens for
// writing and closes — opening a kernel setting for writing is the proof, a
// write would be the damage. The escapes live by idea in escapes-*.ts;
// lab.ts is the host half that makes what they look for, runs each in a
// --privileged jail and in the locked one, and names the lock that held.
import { hostFilesystemEscapes } from './escapes-host-fs.ts';
import { kernelSettingEscapes } from './escapes-kernel-settings.ts';
import { sharedObjectEscapes } from './escapes-shared.ts';
import { failed } from './escapes-tools.ts';

/** What an attempt reports, one line each: the launcher passes it to the lab as `result {json}`. */
export interface EscapeResult {
  name: string;
  /** It got out: read the host's secret, or held a host setting open for writing. */
  out: boolean;
  /** What it read or did, one line. */
  evidence: string;
  /** The errno name (EPERM, EROFS …) when it failed. */
  error?: string;
}

/**
 * The walls an escape can hit: the locks of jail.ts, plus pivot_root (step
 * 04), which every jail has, and the v1 devices cgroup of the locked jail.
 */
export type Wall = 'seccomp' | 'caps' | 'userns' | 'maskPaths' | 'noNewPrivs' | 'pivot_root' | 'devices';

export interface Stopper {
  wall: Wall;
  /** For wall 'caps': the capability whose absence stops it (without CAP_). */
  cap?: string;
  /** Short, for the table: "seccomp: mount". */
  label: string;
  /** The kernel's reason, for the learner. */
  why: string;
  /** The errno this wall answers with, when it is the first the attempt meets. */
  errno?: string;
}

/** What the lab makes on the host for an escape to find, or needs the host to have (lab-fixtures.ts). */
export type Fixture = 'marker' | 'ext4-marker' | 'link' | 'key' | 'disk' | 'cgroup-v1' | 'sysrq' | 'userns';

/** Parameters the host half passes in: the marker's path, the key's name … */
export type Params = Record<string, string>;

export interface Escape {
  name: string;
  /** For the table. */
  title: string;
  /** What it does and why it matters, in a sentence or two. */
  teaches: string;
  /** The same attempt as a learner would type it in a shell inside the jail. */
  twin?: string;
  /** The jail shares the host's network (--net host); otherwise it has only lo. */
  hostNetwork?: boolean;
  fixture?: Fixture;
  /** Every wall that stops it, the one the kernel meets first first. */
  stoppers: Stopper[];
  /** Runs inside the jail, in PID 1's main thread, where the locks apply. */
  attempt(params: Params): EscapeResult;
}

/** The table's order: the eight of the lesson's gaps first, then two more. */
const ORDER = ['core_pattern', 'release_agent', 'open_by_handle_at', 'chroot', 'fresh_proc', 'nested_userns', 'net_admin', 'mknod_disk', 'sysrq_trigger', 'keyring'];

export const ESCAPES: Escape[] = [...kernelSettingEscapes, ...hostFilesystemEscapes, ...sharedObjectEscapes].sort((a, b) => ORDER.indexOf(a.name) - ORDER.indexOf(b.name));

export function findEscape(name: string): Escape | undefined {
  return ESCAPES.find((e) => e.name === name);
}

/** spec.escape: the escape's name, and its parameters as a query string ("open_by_handle_at?marker=…"). */
export function escapeRequest(name: string, params: Params = {}): string {
  const query = new URLSearchParams(params).toString();
  return query ? `${name}?${query}` : name;
}

/**
 * The init's payload: runs one attempt and never throws — whatever goes
 * wrong is the attempt's result, an errno the lab can read.
 */
export async function attemptEscape(request: string): Promise<EscapeResult> {
  const [name = '', query = ''] = request.split('?', 2);
  const escape = findEscape(name);
  if (!escape) return { name, out: false, evidence: `no such escape '${name}'`, error: 'ENOENT' };
  try {
    return escape.attempt(Object.fromEntries(new URLSearchParams(query)));
  } catch (err) {
    return failed(name, err);
  }
}
