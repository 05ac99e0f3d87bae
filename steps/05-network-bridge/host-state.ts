// What the first bridged jail changes on the host, and the last one restores.
//
// Before it changes anything shared, the first jail writes down how it found
// the host (run/network.saved.json): ip_forward, and which iptables tables
// existed. The last jail out, or npm run clean, puts exactly that back. A
// killed run leaves the record, so the next run still restores the original.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { explain, showCommand, warn } from '../../lib/output.ts';
import { which } from '../../lib/preflight.ts';
import { run } from '../../lib/sh.ts';
import { runDir } from '../../lib/state.ts';

export const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const savedPath = (): string => join(runDir(), 'network.saved.json');

/** The host as it was before the first jail: restored by the last one, or by npm run clean. */
interface SavedHost {
  ipForward: string;
  /** iptables-nft creates a table on its first rule and never deletes it: we delete the ones we created. */
  iptablesTables: string[];
}

export const readIpForward = (): string => readFileSync(IP_FORWARD, 'utf8').trim();

function readSaved(): SavedHost | undefined {
  try {
    return JSON.parse(readFileSync(savedPath(), 'utf8')) as SavedHost;
  } catch {
    return undefined;
  }
}

/** Only the first jail records; a killed run leaves the record, so the next one keeps the original values. */
export async function saveHostNetwork(): Promise<void> {
  if (existsSync(savedPath())) return;
  const saved: SavedHost = { ipForward: readIpForward(), iptablesTables: [...(await iptablesTables()).keys()] };
  writeFileSync(savedPath(), JSON.stringify(saved) + '\n', { flag: 'wx' });
}

/** The host's iptables tables, with their chains and how many rules each has (iptables-save lists only existing tables). */
async function iptablesTables(): Promise<Map<string, { chains: string[]; rules: number }>> {
  const tables = new Map<string, { chains: string[]; rules: number }>();
  let current = { chains: [] as string[], rules: 0 };
  for (const line of (await run(['iptables-save'])).split('\n')) {
    if (line.startsWith('*')) tables.set(line.slice(1), (current = { chains: [], rules: 0 }));
    else if (line.startsWith(':')) current.chains.push(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-A ')) current.rules++;
  }
  return tables;
}

const builtinChains: Record<string, string[]> = { filter: ['INPUT', 'FORWARD', 'OUTPUT'], nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'], raw: ['PREROUTING', 'OUTPUT'] };

async function deleteEmptyTables(existedBefore: string[]): Promise<void> {
  if (!(await run(['iptables', '--version'])).includes('nf_tables')) return; // iptables-legacy's tables are kernel modules, not made on demand
  for (const [table, t] of await iptablesTables()) {
    const builtins = builtinChains[table];
    if (!builtins || existedBefore.includes(table) || t.rules > 0 || !t.chains.every((c) => builtins.includes(c))) continue;
    if (!which('nft')) {
      warn(`the iptables table ${table} is empty but stays: install nftables (sudo apt-get install nftables) to let cleanup remove it`);
      continue;
    }
    explain(`iptables-nft made the table ${table} for our first rule; it is empty now and did not exist before.`);
    showCommand(`nft delete table ip ${table}`);
    await run(['nft', 'delete', 'table', 'ip', table]);
  }
}

/** Puts back what saveHostNetwork() recorded; false if there was no record (nothing to restore). */
export async function restoreHostNetwork(): Promise<boolean> {
  if (!existsSync(savedPath())) return false;
  const saved = readSaved();
  if (saved && readIpForward() !== saved.ipForward) {
    showCommand(`sysctl -w net.ipv4.ip_forward=${saved.ipForward}`);
    writeFileSync(IP_FORWARD, saved.ipForward + '\n');
  }
  if (saved) await deleteEmptyTables(saved.iptablesTables);
  rmSync(savedPath(), { force: true });
  return true;
}
