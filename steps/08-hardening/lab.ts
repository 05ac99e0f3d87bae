// The escape lab, host half: `npm run step 8` with no command. Each escape
// of the catalogue (escapes.ts) runs twice — in a --privileged jail (steps
// 04-07's, every lock off) and in the locked default one — and the table
// at the end says which got out, and which lock held. The source text ends
// its security talk with "权限这东西，还是得靠人" (permissions come down to
// people); the count on the table's last line is the measured answer.
import { readFileSync } from 'node:fs';
import { CleanupStack, withSignals } from '../../lib/cleanup.ts';
import { JailError, signalNumber } from '../../lib/errors.ts';
import { colour, explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import type { JailHook } from '../../lib/spec.ts';
import { rootfsDir } from '../../lib/state.ts';
import { requireRootfs } from '../01-rootfs/rootfs.ts';
import { pivotSpec } from '../04-pivot-root/jail.ts';
import { cgroupHook } from '../06-cgroups/cgroups.ts';
import { ESCAPES, escapeRequest, findEscape, type Escape, type EscapeResult, type Stopper } from './escapes.ts';
import { DEFAULT_LOCKS, deviceRules, hardenedSpec, launchHardened, PRIVILEGED, type Locks } from './jail.ts';
import { prepareFixture } from './lab-fixtures.ts';

export type JailKind = 'privileged' | 'locked';

export interface LabRun {
  jail: JailKind;
  result: EscapeResult;
  /** The escape's walls that stand in this jail, the one the kernel meets first first; empty if it got out. */
  stoppedBy: Stopper[];
  /** The jail's exit status (0: the payload ran and reported). */
  status: number;
}
export type Attempt = LabRun | { jail: JailKind; skipped: string };

export interface LabRow {
  escape: Escape;
  privileged: Attempt;
  locked: Attempt;
}

export const locksOf = (jail: JailKind): Locks => (jail === 'privileged' ? PRIVILEGED : DEFAULT_LOCKS);

/** Whether one of an escape's walls stands in a jail with these locks (and, or not, the device cgroup). */
export function wallIsUp(s: Stopper, locks: Locks, deviceCgroup: boolean): boolean {
  switch (s.wall) {
    case 'seccomp':
      return locks.seccomp;
    case 'caps':
      return !locks.caps.some((c) => c.replace(/^CAP_/, '') === s.cap);
    case 'userns':
      return locks.userns;
    case 'maskPaths':
      return locks.maskPaths;
    case 'noNewPrivs':
      return locks.noNewPrivs;
    case 'pivot_root':
      return true; // every jail from step 04 on
    case 'devices':
      return deviceCgroup;
  }
}

/** The v1 devices controller: where it exists, the locked jail's cgroup lets it open only step 04's minimal /dev. */
export function hasV1Devices(): boolean {
  return /^devices\s+[1-9]\d*\s+\d+\s+1$/m.test(readFileSync('/proc/cgroups', 'utf8'));
}

/** The jail's hooks, as main.ts gives them: the device cgroup where the lock is on (on v1; v2 would need a BPF program). */
function jailHooks(locks: Locks): JailHook[] {
  const devices = deviceRules(locks);
  return devices && hasV1Devices() ? [cgroupHook({ devices })] : [];
}

export interface TryOptions {
  rootfs?: string;
  /** The locked jail's locks, if not DEFAULT_LOCKS: e.g. seccomp off, to see which wall holds next. */
  locks?: Locks;
  /** Aborted on Ctrl-C: what was made is undone instead of a jail started. */
  signal?: AbortSignal;
}

/**
 * One escape in one jail: the host makes what the escape looks for, the jail
 * runs the attempt as its payload, the host checks the claim, and everything
 * made is undone before this returns. Throws if the jail could not start or
 * said nothing: a locked jail that never ran the attempt has proved nothing.
 */
export async function tryEscape(escape: Escape, jail: JailKind, opts: TryOptions = {}): Promise<Attempt> {
  const rootfs = opts.rootfs ?? rootfsDir('busybox');
  await using cleanup = new CleanupStack();
  const prep = await prepareFixture(escape.fixture, rootfs, cleanup);
  if ('skip' in prep) return { jail, skipped: prep.skip };
  // Ctrl-C while the fixture was made: undo it rather than start a jail
  if (opts.signal?.aborted) throw new JailError(`interrupted before the ${jail} jail started`);
  const locks = jail === 'locked' && opts.locks ? opts.locks : locksOf(jail);
  const hooks = jailHooks(locks);
  const base = pivotSpec(rootfs, 'lab', false, ['/bin/true']);
  // --net host for the escapes that need the host's network; the others get a namespace with only lo (--net none)
  if (escape.hostNetwork) base.namespaces = base.namespaces.filter((n) => n !== 'net');
  const spec = { ...hardenedSpec(base, locks), escape: escapeRequest(escape.name, prep.params) };
  let result: EscapeResult | undefined;
  const status = await launchHardened(spec, {
    hooks,
    onMessage: (line) => {
      if (line.startsWith('result ')) result = JSON.parse(line.slice('result '.length)) as EscapeResult;
    },
  });
  if (!result) throw new JailError(`the ${jail} jail ended (status ${status}) without trying ${escape.name}`, 'run it alone with DEBUG=1 to see why');
  if (prep.confirm) result = await prep.confirm(result);
  return { jail, result, status, stoppedBy: result.out ? [] : escape.stoppers.filter((s) => wallIsUp(s, locks, hooks.length > 0)) };
}

/** The escapes to run: all, or the named ones (an unknown name is an error that lists them). */
export function pickEscapes(only?: string[]): Escape[] {
  if (!only?.length) return ESCAPES;
  return only.map((name) => findEscape(name) ?? badName(name));
}
function badName(name: string): never {
  throw new JailError(`there is no escape '${name}'`, `the escapes are: ${ESCAPES.map((e) => e.name).join(' ')}`, 2);
}

/**
 * The lab: every escape (or the `only` ones) in a --privileged jail and in
 * the locked one (DEFAULT_LOCKS, or `locks`), then the table. Exit status 0
 * when nothing got out of the locked jail, 1 when something did or a jail
 * failed, 128+N on a signal.
 */
export async function runEscapeLab(opts: { only?: string[]; locks?: Locks } = {}): Promise<number> {
  requireRoot('the escape lab');
  const escapes = pickEscapes(opts.only);
  const rootfs = requireRootfs(rootfsDir('busybox'));
  let interrupted: NodeJS.Signals | undefined;
  const abort = new AbortController();
  let failures = 0;
  const rows: LabRow[] = [];
  heading(`The escape lab: ${escapes.length} ways out, each tried in a --privileged jail and in the locked one`);
  explain('Each attempt runs as PID 1 inside the jail, after pivot_root and after every lock. It only reads, or opens for');
  explain('writing and closes: opening a kernel setting for writing is the proof, writing would be the damage.');
  explain('What the lab makes on the host for an escape to find, it takes away again — also on Ctrl-C.');
  // Ctrl-C: the launcher forwards it to the jail that runs; we stop after that jail, undo, and print what we have
  await withSignals(
    (sig) => {
      interrupted ??= sig;
      abort.abort();
    },
    async () => {
      for (const [i, escape] of escapes.entries()) {
        if (interrupted) break;
        introduce(escape, i, escapes.length);
        const row: Partial<LabRow> = { escape };
        for (const jail of ['privileged', 'locked'] as const) {
          if (interrupted) break;
          try {
            row[jail] = await tryEscape(escape, jail, { rootfs, locks: opts.locks, signal: abort.signal });
          } catch (err) {
            if (interrupted) break;
            failures++;
            row[jail] = { jail, skipped: `the jail failed: ${(err as Error).message}` };
          }
          tell(row[jail]!);
        }
        if (row.privileged && row.locked) rows.push(row as LabRow);
      }
    },
  );
  printTable(rows, opts.locks !== undefined);
  if (interrupted) {
    warn(`interrupted (${interrupted}): the jail that ran was stopped, and what the lab made for it is gone`);
    return 128 + (signalNumber(interrupted) ?? 0);
  }
  return rows.some((r) => gotOut(r.locked)) || failures ? 1 : 0;
}

const gotOut = (a: Attempt): boolean => 'result' in a && a.result.out;

function introduce(escape: Escape, i: number, n: number): void {
  heading(`Escape ${i + 1} of ${n}: ${escape.name} — ${escape.title}`);
  explain(escape.teaches);
  if (escape.twin) showCommand(escape.twin);
  if (escape.hostNetwork) explain("both jails share the host's network for this one (--net host)");
}

function tell(a: Attempt): void {
  const who = a.jail === 'privileged' ? '--privileged' : 'locked';
  if ('skipped' in a) return warn(`${who}: n/a — ${a.skipped}`);
  const { result } = a;
  if (result.out) return warn(`${who}: GOT OUT — ${result.evidence}`);
  const [first, ...rest] = a.stoppedBy;
  if (!first) return warn(`${who}: did not get out, though no lock of this jail is meant to stop it (${result.error ?? 'no errno'}): ${result.evidence}`);
  ok(`${who}: stopped${result.error ? ` (${result.error})` : ''} by ${first.label} — ${first.why}`);
  if (first.errno && result.error && first.errno !== result.error) explain(`    (${result.error}, not this wall's ${first.errno}: the attempt met another wall first)`);
  explain(`    what it saw: ${result.evidence}`);
  if (rest.length) explain(`    and behind that wall: ${rest.map((s) => s.label).join(', ')}`);
}

function cell(a: Attempt): string {
  if ('skipped' in a) return a.skipped.startsWith('the jail failed') ? 'FAILED' : 'n/a';
  return a.result.out ? 'OUT' : 'stopped';
}

function stoppedByCell(row: LabRow): string {
  const { privileged: p, locked: l } = row;
  if ('skipped' in l) return 'skipped' in p ? p.skipped : l.skipped;
  if (l.result.out) return '— (the locks did not hold)';
  const labels = l.stoppedBy.map((s) => s.label).join(', ') || `? (${l.result.error ?? 'no errno'})`;
  return 'result' in p && !p.result.out ? `${labels} (in both)` : labels;
}

/** The table, and the count that answers the source text. */
export function formatTable(rows: LabRow[]): string {
  const head = ['escape', 'privileged', 'locked', 'stopped by'];
  const body = rows.map((r) => [r.escape.title, cell(r.privileged), cell(r.locked), stoppedByCell(r)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const tried = rows.filter((r) => 'result' in r.privileged && 'result' in r.locked);
  const na = rows.length - tried.length;
  return [
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    `${tried.filter((r) => gotOut(r.privileged)).length} of ${tried.length} escapes get out without the locks, ${tried.filter((r) => gotOut(r.locked)).length} with them${na ? ` (${na} n/a on this host)` : ''}.`,
  ].join('\n');
}

function printTable(rows: LabRow[], custom: boolean): void {
  if (!rows.length) return;
  heading('What got out');
  process.stdout.write(formatTable(rows) + '\n');
  const leaked = rows.filter((r) => gotOut(r.locked)).map((r) => r.escape.name);
  if (!leaked.length) {
    explain('"权限这东西，还是得靠人" — permissions come down to people, says the source text. Measured: they come down to a few kernel locks, each a few lines of code.');
  } else if (custom) {
    warn(`with the locks you chose, ${leaked.join(', ')} got out — only the locks you took away stood in its way`);
  } else {
    explain(colour.red(`${leaked.join(', ')} got out of the locked jail. That is a bug in this step: please report it, with the table above.`));
  }
}
