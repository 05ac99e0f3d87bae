// The DNS servers a jail can use: the host's real upstream ones. A stub
// resolver on 127.0.0.53 (systemd-resolved) answers only inside the host's own
// network namespace; from a jail's, 127.0.0.53 is the jail's own loopback.
import { existsSync, readFileSync } from 'node:fs';

export function upstreamResolvConf(etc = '/etc/resolv.conf', resolved = '/run/systemd/resolve/resolv.conf'): { text: string; servers: string[]; source: string } {
  const servers = (text: string) => [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!);
  const isLoopback = (s: string) => s.startsWith('127.') || s === '::1';
  let source = etc;
  let text = existsSync(etc) ? readFileSync(etc, 'utf8') : '';
  if (servers(text).some(isLoopback) && existsSync(resolved)) {
    source = resolved;
    text = readFileSync(resolved, 'utf8');
  }
  // IPv4 only: a bridged jail has no IPv6 route.
  const usable = servers(text).filter((s) => !isLoopback(s) && /^\d{1,3}(\.\d{1,3}){3}$/.test(s));
  const rest = text.split('\n').filter((l) => /^\s*(search|domain|options)\s/.test(l));
  const out = [`# written by build-a-jail from ${source}: the host's upstream DNS servers, without loopback ones`, ...usable.map((s) => `nameserver ${s}`), ...rest];
  return { text: out.join('\n') + '\n', servers: usable, source };
}
