// The core of step 05: a switch, and a cable per jail.
//
//   bridge    baj0, a switch inside the kernel with the gateway's address:
//             ip link add baj0 type bridge; ip addr add 10.231.0.1/24 dev baj0
//   veth pair a virtual cable: a frame sent into one end comes out of the other
//             ip link add bajh2 type veth peer name bajj2
//   host end  a port of the switch:  ip link set bajh2 master baj0 up
//   jail end  moved into the jail's network namespace, renamed eth0, given
//             an address and a default route via the gateway
//
// All of it happens between "the init exists" and "go" (step 03's
// handshake), so the cable is plugged in before the target's first instruction.
import { readlinkSync } from 'node:fs';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { BRIDGE, type Subnet } from './addresses.ts';
import { deleteLink, ip, ipInJail, ipJson } from './ip.ts';

// ---------------------------------------------------------------------------
// The switch: one bridge for every jail, made by the first

export interface BridgeState {
  up: boolean;
  addrs: string[];
}

/** baj0 as it is now (up? which IPv4 addresses?), or undefined if it does not exist. */
export async function bridgeState(): Promise<BridgeState | undefined> {
  type Link = { flags: string[]; addr_info?: { family: string; local: string; prefixlen: number }[] };
  const [link] = await ipJson<Link[]>('addr', 'show', 'dev', BRIDGE);
  if (!link) return undefined;
  const addrs = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  return { up: link.flags.includes('UP'), addrs };
}

/** 02:… is a locally administered MAC, nobody's hardware; the rest spells the gateway: 10.231.0.1 -> 02:00:0a:e7:00:01. */
const bridgeMac = (subnet: Subnet): string => ['02', '00', ...subnet.gateway.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');

/** Makes whatever of baj0 is missing: the bridge, its address, its link up. */
export async function createBridge(subnet: Subnet): Promise<void> {
  let bridge = await bridgeState();
  if (!bridge) {
    heading(`Building the workshop bridge ${BRIDGE}`);
    explain('A bridge is a switch inside the kernel. It may have many ports: a frame that comes in on one port leaves');
    explain('by the port behind which its destination lives. Each jail will plug one end of a veth pair into it.');
    explain(`(The old tools said: brctl addbr ${BRIDGE}; brctl addif ${BRIDGE} PORT.)`);
    // Without an address of its own a bridge takes the lowest MAC among its ports: when that jail
    // leaves, the gateway's MAC changes under the others' ARP caches and they lose it for half a minute.
    await ip('link', 'add', BRIDGE, 'address', bridgeMac(subnet), 'type', 'bridge');
    bridge = { up: false, addrs: [] };
  }
  if (bridge.addrs.length === 0) {
    explain(`The bridge's own address, ${subnet.gateway}, is the jails' gateway: packets for the outside go to the host through it.`);
    await ip('addr', 'add', `${subnet.gateway}/${subnet.prefix}`, 'dev', BRIDGE);
  }
  if (!bridge.up) await ip('link', 'set', BRIDGE, 'up');
}

// ---------------------------------------------------------------------------
// One jail's cable: a veth pair from baj0 into its namespace

export async function createVethPair(names: { host: string; jail: string }, cleanup: CleanupStack): Promise<void> {
  await deleteLink(names.host); // a killed launcher's, left on our address: the lease is ours now, so is the name
  explain('A veth pair is a virtual cable: a frame sent into one end comes out of the other.');
  await ip('link', 'add', names.host, 'type', 'veth', 'peer', 'name', names.jail);
  cleanup.defer(`veth pair ${names.host}`, () => deleteLink(names.host)); // deleting one end deletes both
}

export async function plugIntoBridge(hostEnd: string): Promise<void> {
  explain(`One end becomes a port of ${BRIDGE} (brctl addif ${BRIDGE} ${hostEnd}).`);
  await ip('link', 'set', hostEnd, 'master', BRIDGE, 'up');
}

export async function moveIntoNamespace(jailEnd: string, pid: number): Promise<void> {
  explain(`The other end moves into the network namespace of the jail's PID 1 (${pid}); the host no longer sees it.`);
  await ip('link', 'set', jailEnd, 'netns', String(pid));
}

export async function configureJailEnd(pid: number, jailEnd: string, address: string, subnet: Subnet): Promise<void> {
  explain(`Inside, it becomes eth0 with ${address}/${subnet.prefix}, and every other destination goes via ${subnet.gateway}.`);
  await ipInJail(pid, 'link', 'set', jailEnd, 'name', 'eth0');
  await ipInJail(pid, 'addr', 'add', `${address}/${subnet.prefix}`, 'dev', 'eth0');
  await ipInJail(pid, 'link', 'set', 'eth0', 'up');
  await ipInJail(pid, 'route', 'add', 'default', 'via', subnet.gateway);
  showLoopbackUp();
}

/**
 * A new network namespace has a loopback that is down: even 127.0.0.1 does
 * not answer until it is up. PID 1 brings it up itself (spec.loopbackUp,
 * step 04's buildPrison, an ioctl: lib/libc.ts's linkUp), as runc's init
 * does: no tool to start from the host for it.
 */
export function showLoopbackUp(): void {
  showCommand('ip link set lo up   # by PID 1, inside the jail\'s network namespace, before the target runs');
}

/** nsenter into the host's own namespace would rename the host's interfaces and replace its default route. */
export function checkOwnNetns(pid: number): void {
  let theirs: string;
  try {
    theirs = readlinkNs(pid);
  } catch {
    throw new JailError(`jail process ${pid} is gone before its network was set up`, 'see the jail\'s output above for why it stopped');
  }
  if (theirs === readlinkNs('self')) {
    throw new JailError(`process ${pid} shares the host's network namespace`, 'a jail with --net none or bridge needs the net namespace: add networkNamespaces(mode) to spec.namespaces');
  }
}
const readlinkNs = (pid: number | 'self'): string => readlinkSync(`/proc/${pid}/ns/net`);
