// Publishing a port: two paths to the jail.
//
// Packets from other hosts and namespaces arrive on an interface and pass nat
// PREROUTING, where DNAT rewrites their destination to the jail's address; the
// jail sees the real client address. Connections the host opens to its own
// addresses (127.0.0.1 above all) have their NAT decided in OUTPUT, at their
// first packet; when they loop back through lo and PREROUTING, nat is not
// asked again: no DNAT for them. For them the launcher listens
// on the port itself and copies bytes to the jail, exactly what Docker's
// docker-proxy does. The alternative (DNAT in OUTPUT + route_localnet=1 +
// SNAT of 127.0.0.1) changes more host settings and cannot be undone if the
// launcher is killed; a listening socket closes with its process.
//
// With a HOSTIP (--publish 127.0.0.1:8080:80) both paths take only that
// address: the DNAT rule matches -d HOSTIP, the proxy listens on HOSTIP. A
// loopback HOSTIP needs one more rule: a neighbour that routes 127.0.0.1 to
// us would match the DNAT rule from outside (moby/moby#41872). A raw rule
// drops such packets unless they come from lo, as Docker 28 does.
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, ok } from '../../lib/output.ts';
import type { JailSpec } from '../../lib/spec.ts';
import { BRIDGE, jailTag } from './addresses.ts';
import { addRule, deleteRule, type Rule } from './iptables.ts';
import { hostSide, type PortMapping } from './modes.ts';

/** The bind is both the check and the reservation: no other program can take the port in between. */
export async function reserveHostPort(m: PortMapping): Promise<Server> {
  const other = m.hostPort === 65535 ? m.hostPort - 1 : m.hostPort + 1;
  const hint = `publish on another host port, e.g. --publish ${m.hostIp ? m.hostIp + ':' : ''}${other}:${m.jailPort}; \`ss -ltnp 'sport = :${m.hostPort}'\` shows who holds it`;
  const listen = (server: Server, host: string) =>
    new Promise<Server>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new JailError(`host port ${m.hostPort} is already taken (on ${host})`, hint, 2) : err));
      server.listen({ port: m.hostPort, host }, () => resolve(server));
    });
  if (m.hostIp) return listen(createServer({ allowHalfOpen: true }), m.hostIp);
  const probe = await listen(createServer(), '127.0.0.1');
  await new Promise((r) => probe.close(r));
  return listen(createServer({ allowHalfOpen: true }), '0.0.0.0');
}

/** The launcher's docker-proxy: one second connection to the jail per connection accepted on the host. */
export function proxyToJail(server: Server, target: () => { host: string; port: number } | undefined): () => Promise<void> {
  const open = new Set<Socket>();
  server.on('connection', (client) => {
    const to = target();
    if (!to) return void client.destroy(); // before attach: there is no jail to talk to yet
    const upstream = connect({ ...to, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => (client.destroy(), upstream.destroy()));
    }
    client.pipe(upstream).pipe(client); // allowHalfOpen: a client's FIN reaches the jail, the answer still comes back
  });
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of open) s.destroy();
    });
}

function publishRule(jail: string, m: PortMapping, address: string): Rule {
  // one address of this host, or any of them
  const to = m.hostIp ? ['-d', m.hostIp] : ['-m', 'addrtype', '--dst-type', 'LOCAL'];
  return {
    table: 'nat',
    chain: 'PREROUTING',
    // not from baj0: a jail reaching a published port of another jail goes through the proxy,
    // since a DNAT back out of baj0 would let the answer bypass the host (no un-DNAT)
    match: ['!', '-i', BRIDGE, '-p', 'tcp', '--dport', String(m.hostPort), ...to],
    target: ['-j', 'DNAT', '--to-destination', `${address}:${m.jailPort}`],
    comment: `${jailTag(jail)}-publish-${m.hostPort}`,
  };
}

/** Loopback addresses arrive only on lo; anything else claiming to be for them is dropped before NAT. */
function loopbackOnlyRule(jail: string, m: PortMapping): Rule {
  return {
    table: 'raw',
    chain: 'PREROUTING',
    match: ['-d', m.hostIp!, '!', '-i', 'lo', '-p', 'tcp', '--dport', String(m.hostPort)],
    target: ['-j', 'DROP'],
    comment: `${jailTag(jail)}-publish-${m.hostPort}-lo-only`,
  };
}

export async function publishPorts(spec: JailSpec, publish: PortMapping[], address: string, cleanup: CleanupStack): Promise<void> {
  if (publish.length === 0) return;
  heading('Publishing ports');
  explain('From other hosts and namespaces: DNAT in nat PREROUTING. From this host itself (127.0.0.1): the launcher\'s proxy,');
  explain('because the NAT of connections to the host\'s own addresses is decided in OUTPUT. Docker does the same with docker-proxy.');
  for (const m of publish) {
    const rule = publishRule(spec.name, m, address);
    await addRule(rule);
    cleanup.defer(`publish ${m.hostPort}`, () => deleteRule(rule));
    if (m.hostIp?.startsWith('127.')) {
      const guard = loopbackOnlyRule(spec.name, m);
      await addRule(guard);
      cleanup.defer(`publish ${m.hostPort} loopback only`, () => deleteRule(guard));
    }
    ok(`host port ${m.hostIp ? hostSide(m) : m.hostPort} -> ${address}:${m.jailPort}`);
  }
}
