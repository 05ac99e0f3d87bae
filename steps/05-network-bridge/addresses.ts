// Names and addresses. The jails share one IPv4 subnet behind the bridge:
//
//   .0    the network itself        .1    baj0, the jails' gateway
//   .2 …  one address per jail      last  the broadcast address
//
// Everything a jail makes is named after its address or its name, with the
// prefix baj, so that cleanup can find it again by name alone.
import { networkInterfaces } from 'node:os';
import { JailError } from '../../lib/errors.ts';
import { PREFIX } from '../../lib/state.ts';

/** The workshop's one bridge, Docker's docker0: made by the first bridged jail, removed by the last. */
export const BRIDGE = `${PREFIX}0`;
/** 10.231/16 is rarely used by home routers, VPNs or Docker (172.17/16); JAIL_SUBNET overrides it. */
export const DEFAULT_SUBNET = '10.231.0.0/24';

export interface Subnet {
  cidr: string;
  network: number;
  prefix: number;
  /** .1, the bridge's own address: the jails' default route. */
  gateway: string;
}

export function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const [a, b, c, d] = m.slice(1).map(Number) as [number, number, number, number];
  if ([a, b, c, d].some((o) => o > 255)) return undefined;
  return a * 2 ** 24 + b * 2 ** 16 + c * 2 ** 8 + d;
}

export const formatIPv4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
export const maskOf = (prefix: number): number => (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0);
export const sizeOf = (s: Subnet): number => 2 ** (32 - s.prefix);

export function parseSubnet(cidr: string): Subnet {
  const [addr = '', len = ''] = cidr.split('/');
  const network = parseIPv4(addr);
  const prefix = Number(len);
  if (network === undefined || !/^\d+$/.test(len) || prefix < 8 || prefix > 30) {
    throw new JailError(`'${cidr}' is not a usable jail subnet`, `give an IPv4 network with a prefix from /8 to /30, e.g. JAIL_SUBNET=${DEFAULT_SUBNET}`, 2);
  }
  const base = (network & maskOf(prefix)) >>> 0;
  if (base !== network) {
    throw new JailError(`'${cidr}' has host bits set`, `did you mean ${formatIPv4(base)}/${prefix}?`, 2);
  }
  return { cidr: `${formatIPv4(network)}/${prefix}`, network, prefix, gateway: formatIPv4(network + 1) };
}

/** opts.subnet, else JAIL_SUBNET, else the default. */
export function jailSubnet(override?: string): Subnet {
  return parseSubnet(override ?? process.env.JAIL_SUBNET ?? DEFAULT_SUBNET);
}

/** An address a jail may have: inside the subnet, not the network, the gateway or the broadcast address. */
export function checkJailAddress(ip: string, subnet: Subnet): string {
  const n = parseIPv4(ip);
  const first = formatIPv4(subnet.network + 2);
  const last = formatIPv4(subnet.network + sizeOf(subnet) - 2);
  const hint = `pick one from ${first} to ${last}, or leave --ip out to get the next free one`;
  if (n === undefined) throw new JailError(`--ip '${ip}' is not an IPv4 address`, hint, 2);
  const i = n - subnet.network;
  if (i < 0 || i >= sizeOf(subnet)) throw new JailError(`${ip} is outside the jail subnet ${subnet.cidr}`, hint, 2);
  if (i === 0 || i === sizeOf(subnet) - 1) throw new JailError(`${ip} is the ${i ? 'broadcast' : 'network'} address of ${subnet.cidr}`, hint, 2);
  if (i === 1) throw new JailError(`${ip} is the gateway: ${BRIDGE}'s own address`, hint, 2);
  return formatIPv4(n); // 10.231.0.07 and 10.231.0.7 are one address and must be one lease
}

/**
 * An address of this host to publish on (HOSTIP of --publish), normalised;
 * undefined for 0.0.0.0, which means every interface. A socket can listen
 * only on an address some interface of its network namespace has (else
 * bind(2) fails with EADDRNOTAVAIL), so ask the host's interfaces first.
 */
export function checkHostAddress(ip: string, flag: string): string | undefined {
  const hint = `\`ip -4 -br addr\` lists this host's addresses; 127.0.0.1 publishes to this host only, 0.0.0.0 (or no address) to every interface`;
  const n = parseIPv4(ip);
  if (n === undefined) throw new JailError(`${flag}: '${ip}' is not an IPv4 address`, hint, 2);
  if (n === 0) return undefined;
  const address = formatIPv4(n);
  const assigned = Object.values(networkInterfaces()).flatMap((addrs) => (addrs ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address));
  if (!assigned.includes(address)) throw new JailError(`${flag}: ${address} is not an address of this host`, hint, 2);
  return address;
}

/** Interface names have at most 15 characters; the address's index in the subnet keeps them short and unique. */
export function vethNames(subnet: Subnet, ip: string): { host: string; jail: string } {
  const i = parseIPv4(ip)! - subnet.network;
  return { host: `${PREFIX}h${i}`, jail: `${PREFIX}j${i}` };
}

/** The host end of a veth pair this step made (bajhN). */
export const ourVeth = new RegExp(`^${PREFIX}h\\d+$`);

/** A jail's name as it appears in file names and iptables comments: baj first, no spaces or slashes. */
export const jailTag = (jail: string): string => (jail.startsWith(PREFIX) ? jail : `${PREFIX}-${jail}`).replace(/[^\w.-]/g, '_');
