// The way back. Each jail undoes its own part through its cleanup stack; what
// the jails share (the bridge, forwarding, NAT) is counted by the leases and
// taken down by the last jail out. A SIGKILLed launcher undoes nothing, so
// everything is found again by its name (baj…) and whatever no live lease
// accounts for is removed: by the next jail that leaves last, or by
// `npm run clean` (bin/clean.ts runs clean() below, after step 03's part
// has stopped the jails whose launcher was killed).
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { explain, heading, ok, warn } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { ensureDir, PREFIX, runDir } from '../../lib/state.ts';
import { BRIDGE, jailTag, ourVeth } from './addresses.ts';
import { resolvPath } from './dns.ts';
import { restoreHostNetwork } from './host-state.ts';
import { deleteLink, ipJson, linkExists } from './ip.ts';
import { deleteTaggedRule, taggedRules } from './iptables.ts';
import { dropLease, isLive, readLeases, withNetworkLock, type Lease } from './leases.ts';

/**
 * Removes what no live lease accounts for. scope 'ours': only this module's
 * names (the last jail leaving); 'every': every baj* veth and baj*-tagged rule
 * (npm run clean). With no live lease the bridge goes and the host is restored.
 * Returns what it removed. Call under the network lock.
 */
async function pruneNetwork(live: Lease[], scope: 'ours' | 'every'): Promise<string[]> {
  const removed: string[] = [];
  const liveTags = live.map((l) => `${jailTag(l.jail)}-publish-`);
  const ourComment = (c: string) => scope === 'every' || c.startsWith(`${BRIDGE}-`) || /-publish-\d+$/.test(c);
  for (const rule of await taggedRules()) {
    const kept = (live.length > 0 && rule.comment.startsWith(`${BRIDGE}-`)) || liveTags.some((t) => rule.comment.startsWith(t));
    if (kept || !ourComment(rule.comment)) continue;
    await deleteTaggedRule(rule);
    removed.push(`iptables rule ${rule.comment}`);
  }
  for (const { ifname } of await ipJson<{ ifname: string }[]>('link', 'show', 'type', 'veth')) {
    const ours = scope === 'every' ? ifname.startsWith(PREFIX) : ourVeth.test(ifname);
    if (!ours || live.some((l) => l.veth === ifname)) continue;
    await deleteLink(ifname);
    removed.push(`veth ${ifname}`);
  }
  for (const lease of readLeases().filter((l) => !isLive(l))) {
    explain(`stale lease ${lease.ip}: its launcher (pid ${lease.pid}) is gone`);
    dropLease(lease.ip);
    removed.push(`stale lease ${lease.ip}`);
  }
  for (const file of readdirSync(ensureDir(runDir())).filter((f) => f.endsWith('.resolv.conf'))) {
    if (live.some((l) => join(runDir(), file) === resolvPath(l.jail))) continue;
    explain(`stale ${file}: its jail is gone`);
    rmSync(join(runDir(), file), { force: true });
    removed.push(`stale ${file}`);
  }
  if (live.length === 0) {
    if (await linkExists(BRIDGE)) {
      await deleteLink(BRIDGE);
      removed.push(`bridge ${BRIDGE}`);
    }
    if (await restoreHostNetwork()) removed.push('ip_forward and iptables tables restored');
  }
  return removed;
}

/** Called by each bridged jail as it leaves: its lease goes, and with the last lease everything shared. */
export async function leaveSharedNetwork(lease: Lease): Promise<void> {
  await withNetworkLock(async () => {
    dropLease(lease.ip);
    if (readLeases().some(isLive)) return; // another jail still uses the bridge
    heading(`The last jail on ${BRIDGE} is gone: restoring the host's network`);
    await pruneNetwork([], 'ours');
  });
}

/**
 * For `npm run clean`: removes what killed runs left of the network (veths,
 * the bridge, baj-tagged iptables rules in every table, stale leases) and
 * restores ip_forward. Jails that still run keep what they use. Idempotent.
 * Returns what it removed.
 */
export async function cleanNetwork(): Promise<string[]> {
  requireRoot('npm run clean');
  heading('Network: removing what stopped jails left behind');
  return withNetworkLock(async () => {
    const live = readLeases().filter(isLive);
    if (live.length) {
      warn(`${live.length} jail(s) still running (${live.map((l) => `${l.jail} ${l.ip}, launcher pid ${l.pid}`).join('; ')}): ${BRIDGE}, forwarding and NAT stay for them`);
    }
    const removed = await pruneNetwork(live, 'every');
    if (removed.length === 0) ok('nothing to remove');
    return removed;
  });
}

/** Step 05's part of `npm run clean`, as bin/clean.ts finds it. */
export { cleanNetwork as clean };
