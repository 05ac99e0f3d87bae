// Step 05, the visiting room: the hook that gives a jail its network, in the
// launcher's two moments (lib/spec.ts's JailHook):
//
//   prepare(spec)       before the jail exists: check every flag, reserve the
//                       published host ports, lease an address, build what the
//                       jails share (bridge, forwarding, NAT), pick resolv.conf
//   attach(spec, pid)   the init exists and waits for "go": plug the cable in
//                       (veth pair into the jail's namespace), publish ports
//
// Every piece lives in a file of its own, named after its idea: bridge.ts
// (the switch and the cable: read it first), nat.ts, publish.ts, leases.ts,
// dns.ts, host-state.ts, clean.ts, topology.ts; the flags in modes.ts.
// Each piece registers its undo on the jail's cleanup stack as it is made.
import { JailError } from '../../lib/errors.ts';
import { heading, ok } from '../../lib/output.ts';
import { requireRoot, requireTools } from '../../lib/preflight.ts';
import type { JailHook, JailSpec } from '../../lib/spec.ts';
import { BRIDGE, checkJailAddress, jailSubnet, maskOf, parseIPv4, vethNames, type Subnet } from './addresses.ts';
import { bridgeState, checkOwnNetns, configureJailEnd, showLoopbackUp, createVethPair, moveIntoNamespace, plugIntoBridge } from './bridge.ts';
import { leaveSharedNetwork } from './clean.ts';
import { bindHostResolvConf, bindResolvConf } from './dns.ts';
import { ipJson } from './ip.ts';
import { inUse, isLive, readLease, readLeases, takeLease, withNetworkLock, type Lease } from './leases.ts';
import { networkNamespaces, parseNetworkMode, type NetworkMode, type PortMapping } from './modes.ts';
import { joinSharedNetwork } from './nat.ts';
import { proxyToJail, publishPorts, reserveHostPort } from './publish.ts';
import { drawTopology, uplink, type JailNetwork } from './topology.ts';

export interface NetworkOptions {
  mode: NetworkMode;
  /** bridge only: this address instead of the next free one. */
  ip?: string;
  publish: PortMapping[];
  /** bridge only: instead of JAIL_SUBNET or 10.231.0.0/24. */
  subnet?: string;
}

export interface NetworkHook extends JailHook {
  /** The jail's address on the bridge, once prepare() has leased it. */
  readonly address: string | undefined;
  /** What attach() built; undefined before. */
  readonly network: JailNetwork | undefined;
  /** drawTopology() of this jail; '' before attach. */
  topology(): string;
}

/** Everything that can be checked before anything is made, so bad input leaves nothing half-made. */
async function checkOptions(spec: JailSpec, opts: NetworkOptions): Promise<{ subnet?: Subnet; wanted?: string }> {
  const mode = parseNetworkMode(opts.mode);
  if (mode === 'none') requireTools('ip', 'nsenter');
  const wantsNet = networkNamespaces(mode).includes('net');
  if (wantsNet !== spec.namespaces.includes('net')) {
    throw new JailError(`--net ${mode} ${wantsNet ? 'needs' : 'must not have'} a network namespace of the jail's own`, "build the spec's namespaces with networkNamespaces(mode)");
  }
  if (mode !== 'bridge') {
    if (opts.publish.length) throw new JailError(`--publish needs --net bridge`, mode === 'host' ? "in host mode the jail's servers already listen on the host's ports" : 'with --net none nothing can reach the jail', 2);
    if (opts.ip !== undefined) throw new JailError('--ip needs --net bridge', 'only a bridged jail has an address of its own', 2);
    return {};
  }
  const subnet = jailSubnet(opts.subnet);
  const wanted = opts.ip === undefined ? undefined : checkJailAddress(opts.ip, subnet);
  const ports = opts.publish.map((m) => m.hostPort);
  const twice = ports.find((p, i) => ports.indexOf(p) !== i);
  if (twice !== undefined) throw new JailError(`host port ${twice} is published twice`, 'each host port can lead to one jail port only', 2);
  requireTools('ip', 'iptables', 'nsenter');
  await checkSubnetIsFree(subnet);
  const held = wanted ? readLease(wanted) : undefined;
  if (held && isLive(held)) throw inUse(held);
  return { subnet, wanted };
}

/** A subnet that overlaps a route of the host would shadow it, or be shadowed: e.g. a VPN on 10.0.0.0/8. */
async function checkSubnetIsFree(subnet: Subnet): Promise<void> {
  for (const r of await ipJson<{ dst: string; dev?: string }[]>('-4', 'route', 'show')) {
    if (r.dev === BRIDGE || r.dst === 'default') continue;
    const [addr = '', len = '32'] = r.dst.split('/');
    const net = parseIPv4(addr);
    const mask = maskOf(Math.min(Number(len), subnet.prefix));
    if (net !== undefined && ((net & mask) >>> 0) === ((subnet.network & mask) >>> 0)) {
      throw new JailError(`the jail subnet ${subnet.cidr} overlaps the host's route to ${r.dst} (${r.dev})`, 'choose a free subnet, e.g. JAIL_SUBNET=10.232.0.0/24', 2);
    }
  }
  const bridge = await bridgeState();
  const mine = `${subnet.gateway}/${subnet.prefix}`;
  if (bridge && bridge.addrs.length && !bridge.addrs.includes(mine)) {
    throw new JailError(`${BRIDGE} already serves ${bridge.addrs.join(', ')}, not ${subnet.cidr}`, 'run every jail with the same JAIL_SUBNET, or stop the others and run sudo npm run clean', 2);
  }
}

export function networkHook(opts: NetworkOptions): NetworkHook {
  let subnet: Subnet | undefined;
  let lease: Lease | undefined;
  let network: JailNetwork | undefined;

  return {
    name: 'network',
    get address() {
      return lease?.ip;
    },
    get network() {
      return network;
    },
    topology: () => (network ? drawTopology(network) : ''),

    async prepare(spec, cleanup) {
      requireRoot(`--net ${opts.mode}`);
      const checked = await checkOptions(spec, opts);
      if (opts.mode === 'host') return bindHostResolvConf(spec);
      // a network namespace of its own starts with lo down: PID 1 brings it up, inside, before the target runs
      spec.loopbackUp = true;
      if (opts.mode !== 'bridge') return;
      subnet = checked.subnet!;
      for (const m of opts.publish) {
        const server = await reserveHostPort(m);
        cleanup.defer(`proxy on host port ${m.hostPort}`, proxyToJail(server, () => (network?.bridge ? { host: network.bridge.ip, port: m.jailPort } : undefined)));
      }
      lease = await withNetworkLock(async () => {
        const taken = takeLease(subnet!, checked.wanted, spec.name);
        cleanup.defer(`address lease ${taken.ip}`, () => leaveSharedNetwork(taken)); // before the shared pieces: it also undoes half of them
        await joinSharedNetwork(subnet!);
        return taken;
      });
      ok(`jail ${spec.name} gets ${lease.ip}/${subnet.prefix} on ${BRIDGE}`);
      bindResolvConf(spec, cleanup);
    },

    async attach(spec, initPid, cleanup) {
      if (opts.mode === 'host') {
        network = { jail: spec.name, pid: initPid, mode: 'host', publish: [], hostLinks: (await ipJson<{ ifname: string }[]>('link', 'show')).map((l) => l.ifname) };
        return;
      }
      checkOwnNetns(initPid);
      if (opts.mode === 'none') {
        heading(`Jail ${spec.name}: a network namespace with only lo`);
        showLoopbackUp();
        network = { jail: spec.name, pid: initPid, mode: 'none', publish: [], hostLinks: [] };
        return;
      }
      if (!lease || !subnet) throw new Error('networkHook: attach() before prepare()');
      heading(`Plugging jail ${spec.name} into ${BRIDGE}`);
      const names = vethNames(subnet, lease.ip);
      await createVethPair(names, cleanup);
      await plugIntoBridge(names.host);
      await moveIntoNamespace(names.jail, initPid);
      await configureJailEnd(initPid, names.jail, lease.ip, subnet);
      await publishPorts(spec, opts.publish, lease.ip, cleanup);
      const neighbours = readLeases()
        .filter((l) => l.ip !== lease!.ip && isLive(l))
        .map((l) => ({ ip: l.ip, veth: l.veth }));
      network = {
        jail: spec.name,
        pid: initPid,
        mode: 'bridge',
        publish: opts.publish,
        hostLinks: [],
        bridge: { name: BRIDGE, subnet: subnet.cidr, gateway: subnet.gateway, prefix: subnet.prefix, ip: lease.ip, hostVeth: names.host, neighbours, uplink: await uplink() },
      };
    },
  };
}
