// DNS for a bridged jail. systemd-resolved's stub 127.0.0.53 is the host's
// loopback; from the jail's namespace that address is the jail's own lo,
// where nobody answers. Give the jail the servers the stub itself asks, in a
// resolv.conf of its own, bind-mounted read-only over /etc/resolv.conf.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { explain, warn } from '../../lib/output.ts';
import { upstreamResolvConf } from '../../lib/resolv.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { ensureDir, runDir } from '../../lib/state.ts';
import { jailTag } from './addresses.ts';

/** run/baj-NAME.resolv.conf: named after the jail, so cleanup finds a killed jail's copy. */
export const resolvPath = (jail: string): string => join(runDir(), `${jailTag(jail)}.resolv.conf`);

export function bindResolvConf(spec: JailSpec, cleanup: CleanupStack): void {
  const { text, servers, source } = upstreamResolvConf();
  if (servers.length === 0) warn(`${source} names no nameserver the jail can reach: names will not resolve inside`);
  const file = resolvPath(spec.name);
  ensureDir(runDir());
  writeFileSync(file, text);
  cleanup.defer(`resolv.conf of ${spec.name}`, () => rmSync(file, { force: true }));
  explain(`The jail's /etc/resolv.conf: ${servers.join(', ') || 'no server'} (from ${source}).`);
  spec.binds.push({ source: file, target: '/etc/resolv.conf', readonly: true });
}

/** Host mode: the same namespace as the host, where even a 127.0.0.53 stub answers, so the host's own file works. */
export function bindHostResolvConf(spec: JailSpec): void {
  spec.binds.push({ source: '/etc/resolv.conf', target: '/etc/resolv.conf', readonly: true });
}
