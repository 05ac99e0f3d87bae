// The picture of one jail's network, drawn with its real names and addresses
// once the jail runs: the host's uplink, the bridge, the veth pair across the
// namespace boundary, the jail's eth0 and its published ports.
import { explain, heading } from '../../lib/output.ts';
import { ipJson } from './ip.ts';
import { hostSide, type NetworkMode, type PortMapping } from './modes.ts';
import type { NetworkHook } from './network.ts';

export interface JailNetwork {
  jail: string;
  pid: number;
  mode: NetworkMode;
  publish: PortMapping[];
  /** host mode: the host's interfaces, which the jail sees too. */
  hostLinks: string[];
  bridge?: {
    name: string;
    subnet: string;
    gateway: string;
    prefix: number;
    ip: string;
    hostVeth: string;
    /** The other jails on the bridge when this one was attached. */
    neighbours: { ip: string; veth: string }[];
    /** Where the host's default route leads. */
    uplink?: { dev: string; address?: string };
  };
}

function box(lines: string[], indent: string, tee?: number): string[] {
  const width = Math.max(...lines.map((l) => l.length)) + 2;
  const border = '+' + [...'-'.repeat(width)].map((c, i) => (i === tee ? '+' : c)).join('') + '+';
  return [border, ...lines.map((l) => `| ${l.padEnd(width - 1)}|`), border].map((l) => indent + l);
}

/** How a published port is reached: 127.0.0.1 never passes PREROUTING, so only the proxy serves it. */
const paths = (m: PortMapping): string =>
  m.hostIp?.startsWith('127.') ? "(from this host only: the launcher's proxy)" : "(DNAT from other hosts and namespaces; from this host via the launcher's proxy)";

/** A small picture of one jail's network, with its real names and addresses. */
export function drawTopology(net: JailNetwork): string {
  if (net.mode === 'host') {
    return [
      `  jail ${net.jail} (pid ${net.pid}) shares the host's network namespace:`,
      `  it sees the host's interfaces (${net.hostLinks.join(', ')}) and shares its ports.`,
    ].join('\n');
  }
  if (net.mode === 'none' || !net.bridge) {
    return [`  jail ${net.jail}: network namespace of pid ${net.pid}`, ...box(['lo   127.0.0.1/8   up', '(no other interface: nothing in, nothing out)'], '  ')].join('\n');
  }
  const b = net.bridge;
  const others = b.neighbours.map((n) => `${n.veth} (${n.ip})`);
  const lines = [
    '  host: the root network namespace',
    b.uplink ? `      ${b.uplink.dev} ${b.uplink.address ?? ''}  <-- outbound: MASQUERADE -s ${b.subnet} ! -o ${b.name}` : '      (no default route: the jails reach only this host)',
    '        ^',
    '        |  routed by the host (net.ipv4.ip_forward=1)',
    ...box([`${b.name}   bridge   ${b.gateway}/${b.prefix}   the jails' gateway`, ...(others.length ? [`other ports: ${others.join(', ')}`] : [])], '     ', 2),
    `        | ${b.hostVeth.padEnd(8)} veth, host end (a port of ${b.name})`,
    `  - - - | - - - - - - - - - - - - - - - - - - - - -  namespace boundary`,
    `        | ${'eth0'.padEnd(8)} veth, jail end   ${b.ip}/${b.prefix}`,
    `  jail ${net.jail}: network namespace of pid ${net.pid}`,
    `      lo up, default via ${b.gateway}`,
  ];
  for (const m of net.publish) {
    lines.push(`  published: tcp ${hostSide(m)} -> ${b.ip}:${m.jailPort}  ${paths(m)}`);
  }
  return lines.join('\n');
}

/** Where the host's default route leads: the interface the jails' NATed packets leave by. */
export async function uplink(): Promise<{ dev: string; address?: string } | undefined> {
  const [route] = await ipJson<{ dev?: string }[]>('-4', 'route', 'show', 'default');
  if (!route?.dev) return undefined;
  const [link] = await ipJson<{ addr_info?: { local: string }[] }[]>('-4', 'addr', 'show', 'dev', route.dev);
  return { dev: route.dev, address: link?.addr_info?.[0]?.local };
}

/** Prints the picture of what was built, once the jail runs. */
export function showTopology(hook: NetworkHook): void {
  const picture = hook.topology();
  if (!picture) return;
  heading('The network you just built');
  for (const line of picture.split('\n')) explain(line);
}
