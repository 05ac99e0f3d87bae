// The three network modes, and the flags that choose one:
//
//   --net none     a network namespace of its own with only `lo`: nothing in, nothing out
//   --net host     no network namespace: the jail uses the host's interfaces and ports
//   --net bridge   a namespace of its own plus one end of a veth pair on baj0
//   --ip ADDR      bridge only: this address instead of the next free one
//   --publish [IP:]HOST:JAIL   bridge only: the host's port HOST (on its address IP only) leads to the jail's JAIL
//
// The flags are parsed and checked here, before anything is made: bad input leaves nothing behind.
import { JailError } from '../../lib/errors.ts';
import type { JailSpec, Namespace } from '../../lib/spec.ts';
import { PREFIX } from '../../lib/state.ts';
import { checkHostAddress } from './addresses.ts';

export type NetworkMode = 'none' | 'host' | 'bridge';
export const networkModes: readonly NetworkMode[] = ['none', 'host', 'bridge'];

export interface PortMapping {
  /** Only this address of the host (Docker's -p 127.0.0.1:8080:80); absent: every interface. */
  hostIp?: string;
  hostPort: number;
  jailPort: number;
  proto: 'tcp';
}

/** 127.0.0.1:8080, or *:8080 for every interface: the host side as ss and Docker write it. */
export const hostSide = (m: PortMapping): string => `${m.hostIp ?? '*'}:${m.hostPort}`;

export function parseNetworkMode(s: string): NetworkMode {
  if ((networkModes as readonly string[]).includes(s)) return s as NetworkMode;
  throw new JailError(`unknown network mode '${s}'`, "use --net none (only lo), --net host (the host's network) or --net bridge (an address of its own on baj0)", 2);
}

const isPort = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 65535;

/**
 * "23322:22" (or "23322:22/tcp"): the host's port 23322, on every interface,
 * leads to the jail's port 22. "127.0.0.1:23322:22": on that address only.
 */
export function parsePublish(s: string): PortMapping {
  const m = /^(?:([^:]*):)?(\d{1,5}):(\d{1,5})(?:\/(\w+))?$/.exec(s.trim());
  const hostPort = Number(m?.[2]);
  const jailPort = Number(m?.[3]);
  if (!m || !isPort(hostPort) || !isPort(jailPort)) {
    throw new JailError(`--publish '${s}' is not HOSTPORT:JAILPORT or HOSTIP:HOSTPORT:JAILPORT`, "e.g. --publish 23322:22 makes the jail's port 22 reachable on the host's port 23322 (ports 1-65535); --publish 127.0.0.1:23322:22 only from this host", 2);
  }
  if (m[4] !== undefined && m[4] !== 'tcp') {
    throw new JailError(`--publish '${s}': only tcp can be published`, 'the host side of a published port is a TCP proxy; drop the /' + m[4], 2);
  }
  const hostIp = m[1] === undefined ? undefined : checkHostAddress(m[1], `--publish '${s}'`);
  return { ...(hostIp ? { hostIp } : {}), hostPort, jailPort, proto: 'tcp' };
}

/** The namespaces a mode adds to the clone flags: host mode shares the host's network, so none. */
export function networkNamespaces(mode: NetworkMode): Namespace[] {
  return mode === 'host' ? [] : ['net'];
}

export const networkFlags = {
  net: { type: 'string', value: 'MODE', help: 'none (only lo), host (the host\'s network) or bridge (default)', default: 'bridge' },
  ip: { type: 'string', value: 'ADDR', help: 'the jail\'s address on the bridge (default: the next free one)' },
  publish: { type: 'list', value: '[IP:]HOST:JAIL', help: 'make the jail\'s TCP port JAIL reachable on the host\'s port HOST: on every interface, or only on the host\'s address IP (e.g. 127.0.0.1)' },
  name: { type: 'string', value: 'NAME', help: 'a name for the jail (default: its launcher\'s pid)' },
} as const;

export interface NetworkChoice {
  mode: NetworkMode;
  ip?: string;
  publish: PortMapping[];
}

/** Checks the network flags together: --ip and --publish only mean something on the bridge. */
export function networkChoice(f: { net?: string; ip?: string; publish: string[] }): NetworkChoice {
  const mode = parseNetworkMode(f.net ?? 'bridge');
  const publish = f.publish.map(parsePublish);
  if (mode !== 'bridge' && (f.ip || publish.length)) {
    throw new JailError(`--ip and --publish need --net bridge (the jail has no address of its own with --net ${mode})`, undefined, 2);
  }
  return { mode, ip: f.ip, publish };
}

/** Step 04's jail, with the network namespace only when the mode wants one. */
export function withNetwork(spec: JailSpec, choice: NetworkChoice, name?: string): JailSpec {
  if (name !== undefined && !/^[a-z0-9][a-z0-9-]{0,19}$/.test(name)) {
    throw new JailError(`'${name}' is not a jail name`, 'use up to 20 lowercase letters, digits and hyphens, e.g. web-1', 2);
  }
  const net = networkNamespaces(choice.mode);
  return {
    ...spec,
    name: name ? `${PREFIX}-${name}` : spec.name,
    namespaces: spec.namespaces.filter((n) => n !== 'net' || net.includes('net')),
  };
}
