// npm run clean: removes whatever a killed run left on the host — running
// jails, veths, the bridge, iptables rules, leases, cgroups, half-built
// rootfs trees — found by name. Idempotent; safe while nothing runs.
// The built rootfs trees and the download cache stay (pass --all to remove them too).
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runMain } from './errors.ts';
import { explain, heading, ok } from './output.ts';
import { requireRoot } from './preflight.ts';
import { jailCache, jailHome } from './state.ts';
import { cleanNetwork } from '../steps/05-network-bridge/network.ts';
import { cleanCgroups } from '../steps/06-cgroups/cgroups.ts';

/** Every jail's PID 1 runs our bundled init; killing it ends its whole PID namespace. */
function killJails(): number {
  let killed = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (/\/build-a-jail\/init-(pivot|exec)-[0-9a-f]+\.mjs/.test(cmd) && Number(pid) !== process.pid) {
      try {
        process.kill(Number(pid), 'SIGKILL');
        killed++;
      } catch {}
    }
  }
  return killed;
}

function removeMatching(dir: string, test: (name: string) => boolean): string[] {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const gone = entries.filter(test).map((e) => join(dir, e));
  for (const p of gone) rmSync(p, { recursive: true, force: true });
  return gone;
}

await runMain(async () => {
  const all = process.argv.includes('--all');
  if (process.argv.includes('--help')) {
    console.log('npm run clean [-- --all]: remove what the workshop left on the host (--all: also the rootfs trees and the cache)');
    return 0;
  }
  requireRoot('cleaning up');
  heading('Removing what the workshop left behind');
  const jails = killJails();
  if (jails) explain(`stopped ${jails} jail(s) (SIGKILL to their PID 1)`);
  await new Promise((r) => setTimeout(r, 200)); // let the kernel tear their namespaces down
  await cleanNetwork();
  const cgroups = await cleanCgroups();
  if (cgroups.length) explain(`removed cgroups: ${cgroups.join(' ')}`);
  const partial = [
    ...removeMatching(join(jailHome(), 'rootfs'), (e) => e.includes('.building-')),
    ...removeMatching('/tmp', (e) => e.startsWith('baj-escape-') || e.startsWith('baj-bench-')),
  ];
  if (partial.length) explain(`removed half-made files: ${partial.join(' ')}`);
  if (all) {
    rmSync(jailHome(), { recursive: true, force: true });
    rmSync(jailCache(), { recursive: true, force: true });
    explain(`removed ${jailHome()} and ${jailCache()}`);
  }
  ok('the host is clean');
  return 0;
});
