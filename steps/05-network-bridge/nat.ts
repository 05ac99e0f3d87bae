// Letting the jails out: what all bridged jails share, built once by the first.
//
//   routing   net.ipv4.ip_forward=1: the host passes on packets that are not for itself
//   NAT       -t nat POSTROUTING -s SUBNET ! -o baj0 -j MASQUERADE: the outside world has
//             no route back to 10.231.0.x, so their source becomes the host's address
//   FORWARD   two ACCEPTs at the top, so a host firewall with a DROP policy lets them pass
//
// The host's own settings are recorded first (host-state.ts) and restored by
// the last jail out (clean.ts).
import { writeFileSync } from 'node:fs';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { BRIDGE, type Subnet } from './addresses.ts';
import { createBridge } from './bridge.ts';
import { IP_FORWARD, readIpForward, saveHostNetwork } from './host-state.ts';
import { addRule, ruleExists, type Rule } from './iptables.ts';

function enableIpForward(): void {
  if (readIpForward() === '1') return;
  explain(`A bridge alone does not reach the outside: the host must route between ${BRIDGE} and its uplink.`);
  showCommand('sysctl -w net.ipv4.ip_forward=1');
  writeFileSync(IP_FORWARD, '1\n');
}

function sharedRules(subnet: Subnet): Rule[] {
  return [
    // The outside world has no route back to 10.231.0.x: rewrite the source to the host's address on the way out.
    { table: 'nat', chain: 'POSTROUTING', match: ['-s', subnet.cidr, '!', '-o', BRIDGE], target: ['-j', 'MASQUERADE'], comment: `${BRIDGE}-masquerade` },
    { table: 'filter', chain: 'FORWARD', match: ['-i', BRIDGE], target: ['-j', 'ACCEPT'], comment: `${BRIDGE}-from-jails` },
    // Into the jails: replies, and connections to a published port (ctstate DNAT); nothing else from outside.
    { table: 'filter', chain: 'FORWARD', match: ['-o', BRIDGE, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED,DNAT'], target: ['-j', 'ACCEPT'], comment: `${BRIDGE}-to-jails` },
  ];
}

/** The bridge, forwarding and NAT, whatever of them is missing; call under the network lock. */
export async function joinSharedNetwork(subnet: Subnet): Promise<void> {
  await saveHostNetwork();
  await createBridge(subnet);
  const rules = sharedRules(subnet);
  if (readIpForward() !== '1' || !(await Promise.all(rules.map(ruleExists))).every(Boolean)) {
    heading('Letting the jails out: forwarding and NAT');
    enableIpForward();
    for (const rule of rules) await addRule(rule);
  }
}
