// Corrects "权限这东西，还是得靠人" (permissions come down to people, software can
// never be relied on): step 08's escape lab, run as data. Every escape of its
// catalogue is tried in a --privileged jail (steps 04-07's, every lock off) and
// in the locked default one; the count of those that got out of each is the
// figure. The lab makes what an escape looks for and removes it again; an
// attempt only reads, or opens a kernel setting for writing and closes it.
import { JailError } from '../lib/errors.ts';
import { rootfsDir } from '../lib/state.ts';
import { requireRootfs } from '../steps/01-rootfs/rootfs.ts';
import type { Escape } from '../steps/08-hardening/escapes.ts';
import { pickEscapes, tryEscape, type Attempt } from '../steps/08-hardening/lab.ts';
import { lesson, stillWanted, type Check, type Outcome } from './claims-common.ts';

const gotOut = (a: Attempt): boolean => 'result' in a && a.result.out;

export const locksCheck: Check = {
  name: 'permissions',
  zh: '权限这东西，还是得靠人，靠软件永远靠不住',
  en: 'permissions come down to people; software can never be relied on for them',
  lesson: lesson('08-hardening', 'The escape lab'),
  async run(ctx): Promise<Outcome> {
    // the lab's own rootfs, as `npm run step 8` uses it: its parent lets the locked jail's mapped root through
    // (this run's private copy sits in a 0700 scratch dir that only the host's root may enter)
    const rootfs = requireRootfs(rootfsDir('busybox'));
    const rows: { name: string; privileged: Attempt; locked: Attempt }[] = [];
    const failures: string[] = [];
    // a jail that could not start proved nothing: the others are still tried, then the check fails
    const attempt = async (escape: Escape, jail: 'privileged' | 'locked'): Promise<Attempt> => {
      stillWanted(ctx);
      try {
        return await tryEscape(escape, jail, { rootfs, signal: ctx.signal });
      } catch (err) {
        failures.push(`${escape.name} (${jail}): ${(err as Error).message}`);
        return { jail, skipped: 'failed' };
      }
    };
    for (const escape of pickEscapes()) {
      const privileged = await attempt(escape, 'privileged');
      const locked = await attempt(escape, 'locked');
      rows.push({ name: escape.name, privileged, locked });
      ctx.say(`  ${escape.name}: --privileged ${'skipped' in privileged ? 'n/a' : gotOut(privileged) ? 'OUT' : 'stopped'}, locked ${'skipped' in locked ? 'n/a' : gotOut(locked) ? 'OUT' : 'stopped'}`);
    }
    stillWanted(ctx);
    if (failures.length) throw new JailError(`the escape lab's jails failed: ${failures.join('; ')}`);
    const tried = rows.filter((r) => 'result' in r.privileged && 'result' in r.locked);
    if (!tried.length) throw new JailError('no escape could be tried on this host');
    const out = tried.filter((r) => gotOut(r.privileged));
    const leaked = tried.filter((r) => gotOut(r.locked));
    const na = rows.filter((r) => !tried.includes(r)).map((r) => `${r.name} (${'skipped' in r.privileged ? r.privileged.skipped : 'skipped' in r.locked ? r.locked.skipped : ''})`);
    return {
      verdict: leaked.length === 0 && out.length > 0 ? 'corrected' : 'shown',
      figure:
        `${out.length}/${tried.length} vs ${leaked.length}/${tried.length}: escapes that got out of --privileged (${out.map((r) => r.name).join(', ')}) vs out of the locked jail` +
        `${leaked.length ? ` (${leaked.map((r) => r.name).join(', ')})` : ''}${na.length ? `; n/a on this host: ${na.join('; ')}` : ''}`,
      note: 'the locks are a few kernel features — a user namespace, dropped capabilities, no_new_privs, seccomp, masked paths — each a few lines',
    };
  },
};
