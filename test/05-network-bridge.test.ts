// Step 05, the visiting room: none, host and bridge networking, proved with
// real jails started the way a learner starts them (bin/step.mjs 5): the
// flags, addresses, DNS and the picture; each mode; NAT to a test-made
// "outside world"; published ports. Bad input and killed launchers are in
// 05-network-clean.test.ts; the jails, the world and the snapshots in
// network.ts. Traffic goes only to loopback and to network namespaces these
// files make.
//   node --import tsx test/05-network-bridge.test.ts
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { CleanupStack } from '../lib/cleanup.ts';
import { JailError } from '../lib/errors.ts';
import type { JailSpec } from '../lib/spec.ts';
import { upstreamResolvConf } from '../lib/resolv.ts';
import { BRIDGE, checkJailAddress, jailSubnet, parseSubnet, vethNames } from '../steps/05-network-bridge/addresses.ts';
import { readLeases } from '../steps/05-network-bridge/leases.ts';
import { networkNamespaces, parseNetworkMode, parsePublish } from '../steps/05-network-bridge/modes.ts';
import { networkHook } from '../steps/05-network-bridge/network.ts';
import { drawTopology } from '../steps/05-network-bridge/topology.ts';
import { runStep, sh, waitFor } from './helpers.ts';
import { addressOf, execIn, fails, firewallOff, firewallOn, GATEWAY, getFromWorld, hostNetns, httpd, httpGet, idle, linkNames, makeWorld, must, NAME, networkSuite, run, serveInWorld, startJail, stopJail, WORLD } from './network.ts';

// cleanNetwork() runs in this process; the jails' launchers inherit it too.
process.env.JAIL_QUIET = '1';
delete process.env.JAIL_SUBNET;

const test = networkSuite('step 05: none, host and bridge networking');

// ---------------------------------------------------------------------------
// Flags, addresses, DNS and the picture: plain functions, no jail needed

/** A thrown JailError that says what went wrong and what to do. */
function refuses(what: () => unknown, message: RegExp): void {
  try {
    what();
  } catch (err) {
    assert.instance(err, JailError, `expected a JailError, got ${(err as Error).stack}`);
    assert.match((err as Error).message, message);
    assert.ok((err as JailError).hint, `"${(err as Error).message}" has no hint`);
    return;
  }
  assert.unreachable(`expected a JailError matching ${message}`);
}

test('flags: --publish [HOSTIP:]HOSTPORT:JAILPORT and --net MODE are parsed, bad ones refused with a hint', () => {
  assert.equal(parsePublish('23322:22'), { hostPort: 23322, jailPort: 22, proto: 'tcp' });
  assert.equal(parsePublish('8080:80/tcp'), { hostPort: 8080, jailPort: 80, proto: 'tcp' });
  assert.equal(parsePublish('127.0.0.1:23322:22'), { hostIp: '127.0.0.1', hostPort: 23322, jailPort: 22, proto: 'tcp' });
  assert.equal(parsePublish('0.0.0.0:23322:22'), { hostPort: 23322, jailPort: 22, proto: 'tcp' }, '0.0.0.0 is every interface, as without an address');
  for (const bad of ['23322', '0:22', '70000:22', '22:', 'a:b', '1:2:3', '53:53/udp', '', ':1:2', '127.0.0.1:0:22', '127.0.0.1::22']) refuses(() => parsePublish(bad), /publish/);
  refuses(() => parsePublish('10.231.0.300:23322:22'), /'10\.231\.0\.300' is not an IPv4 address/);
  refuses(() => parsePublish('192.0.2.99:23322:22'), /192\.0\.2\.99 is not an address of this host/);
  assert.is(parseNetworkMode('bridge'), 'bridge');
  refuses(() => parseNetworkMode('bridged'), /unknown network mode 'bridged'/);
  assert.equal(networkNamespaces('none'), ['net']);
  assert.equal(networkNamespaces('bridge'), ['net']);
  assert.equal(networkNamespaces('host'), [], 'host mode: no network namespace of its own');
});

test('addresses: the subnet comes from JAIL_SUBNET, a jail address must be a host of it', () => {
  assert.is(jailSubnet().cidr, '10.231.0.0/24');
  assert.is(jailSubnet().gateway, GATEWAY);
  assert.is(jailSubnet('10.99.0.0/16').gateway, '10.99.0.1');
  refuses(() => parseSubnet('10.231.0.5/24'), /host bits/);
  refuses(() => parseSubnet('10.231.0.0/31'), /not a usable/);
  const s = jailSubnet();
  assert.is(checkJailAddress('10.231.0.7', s), '10.231.0.7');
  assert.is(checkJailAddress('10.231.0.07', s), '10.231.0.7', 'one address, one lease');
  for (const [ip, why] of [['10.232.0.7', /outside/], [GATEWAY, /gateway/], ['10.231.0.0', /network address/], ['10.231.0.255', /broadcast/], ['10.231.0.300', /not an IPv4/]] as const) {
    refuses(() => checkJailAddress(ip, s), why);
  }
  assert.equal(vethNames(s, '10.231.0.42'), { host: 'bajh42', jail: 'bajj42' });
});

test("DNS: a bridged jail gets the host's upstream servers, never a loopback stub", () => {
  const dir = mkdtempSync(join(tmpdir(), 'baj-resolv-'));
  try {
    const etc = join(dir, 'resolv.conf');
    const resolved = join(dir, 'resolved.conf');
    writeFileSync(etc, 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n');
    writeFileSync(resolved, 'nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 127.0.0.1\nsearch lan\n');
    const r = upstreamResolvConf(etc, resolved);
    assert.equal(r.servers, ['192.0.2.53']);
    assert.is(r.source, resolved);
    assert.match(r.text, /^search lan$/m);
    assert.not.match(r.text, /nameserver 127\./);
    writeFileSync(etc, 'nameserver 198.51.100.53\n');
    assert.equal(upstreamResolvConf(etc, resolved).servers, ['198.51.100.53']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('topology: the picture names the real pieces', () => {
  const picture = drawTopology({
    jail: 'baj-demo',
    pid: 4242,
    mode: 'bridge',
    publish: [parsePublish('23322:22')],
    hostLinks: [],
    bridge: { name: BRIDGE, subnet: '10.231.0.0/24', gateway: GATEWAY, prefix: 24, ip: '10.231.0.2', hostVeth: 'bajh2', neighbours: [{ ip: '10.231.0.3', veth: 'bajh3' }], uplink: { dev: 'eth0', address: '192.0.2.2' } },
  });
  for (const want of ['eth0 192.0.2.2', 'MASQUERADE -s 10.231.0.0/24 ! -o baj0', 'baj0   bridge   10.231.0.1/24', 'bajh3 (10.231.0.3)', 'bajh2', '10.231.0.2/24', 'pid 4242', '*:23322 -> 10.231.0.2:22']) {
    assert.ok(picture.includes(want), `missing ${want}:\n${picture}`);
  }
  assert.match(drawTopology({ jail: 'baj-x', pid: 7, mode: 'none', publish: [], hostLinks: [] }), /lo +127\.0\.0\.1\/8 +up/);
  const local = drawTopology({
    jail: 'baj-demo',
    pid: 4242,
    mode: 'bridge',
    publish: [parsePublish('127.0.0.1:23322:22')],
    hostLinks: [],
    bridge: { name: BRIDGE, subnet: '10.231.0.0/24', gateway: GATEWAY, prefix: 24, ip: '10.231.0.2', hostVeth: 'bajh2', neighbours: [] },
  });
  assert.ok(local.includes("127.0.0.1:23322 -> 10.231.0.2:22  (from this host only: the launcher's proxy)"), local);
});

test("the hook refuses to wire up a process that shares the host's network namespace", async () => {
  // nsenter into the host's own namespace would rename the host's interfaces and replace its default route
  const spec: JailSpec = { name: `baj-${NAME}self`, rootfs: '/nonexistent', namespaces: ['net'], command: ['true'], env: {}, pivot: true, binds: [] };
  const stack = new CleanupStack();
  try {
    await networkHook({ mode: 'none', publish: [] }).attach!(spec, process.pid, stack);
    assert.unreachable('attach() went ahead');
  } catch (err) {
    assert.instance(err, JailError);
    assert.match((err as Error).message, /shares the host's network namespace/);
  } finally {
    await stack.unwind();
  }
});

// ---------------------------------------------------------------------------
// none and host

test('none: the jail has a network namespace with only lo, and lo is up', async () => {
  const r = await runStep(5, ['--name', `${NAME}none`, '--net', 'none', '--', 'sh', '-c', `ip -o link show; readlink /proc/self/ns/net; ping -c1 -W2 127.0.0.1 >/dev/null && echo lo-answers; ping -c1 -W1 ${GATEWAY} 2>&1; true`]);
  assert.is(r.code, 0, r.stderr);
  assert.equal(linkNames(r.stdout), ['lo']);
  assert.match(r.stdout, /^1: lo: <[^>]*\bUP\b[^>]*>/m, 'lo is up');
  assert.match(r.stdout, /^lo-answers$/m);
  assert.match(r.stdout, /unreachable/i, 'no route anywhere else');
  const netns = /^net:\[\d+\]$/m.exec(r.stdout)?.[0];
  assert.ok(netns && netns !== hostNetns(), 'a namespace of its own');
});

test("host: the jail is in the host's network namespace and sees the host's interfaces", async () => {
  const r = await runStep(5, ['--name', `${NAME}host`, '--net', 'host', '--', 'sh', '-c', 'readlink /proc/self/ns/net; ls /sys/class/net; echo ---; cat /etc/resolv.conf']);
  assert.is(r.code, 0, r.stderr);
  const [ns, ...rest] = r.stdout.split('\n---\n')[0]!.trim().split('\n');
  assert.is(ns, hostNetns());
  assert.equal(rest.sort(), readdirSync('/sys/class/net').sort());
  assert.is(r.stdout.split('\n---\n')[1], readFileSync('/etc/resolv.conf', 'utf8'), "the host's own resolv.conf");
});

test('host: two jails running the same server need different ports', async () => {
  const a = await startJail('web1', ['--net', 'host'], httpd(23381, '127.0.0.1'));
  assert.is(await waitFor("jail web1's httpd on the host's 127.0.0.1", () => httpGet('127.0.0.1', 23381)), '127.0.0.1', 'no publishing needed: it is the host port');
  const [same, other] = await Promise.all([
    runStep(5, ['--name', `${NAME}web2`, '--net', 'host', '--', 'httpd', '-f', '-p', '127.0.0.1:23381', '-h', '/']),
    runStep(5, ['--name', `${NAME}web3`, '--net', 'host', '--', 'sh', '-c', 'httpd -p 127.0.0.1:23382 -h / && echo bound']),
  ]);
  assert.is.not(same.code, 0);
  assert.match(same.stderr, /Address (already )?in use/);
  assert.match(other.stdout, /^bound$/m, other.stderr);
  await stopJail(a);
});

// ---------------------------------------------------------------------------
// bridge

test('bridge: two jails at once have their own addresses, ping each other and the gateway, and talk TCP', async () => {
  const a = await startJail('a', [], httpd(8080));
  const b = await startJail('b', [], idle, { quiet: false }); // its launcher draws the topology, with a as a neighbour
  const ipA = addressOf((await execIn(a, 'ip -4 -o addr show dev eth0')).stdout)!;
  const ipB = addressOf(b.out())!;
  assert.ok(ipA && ipB && ipA !== ipB, `own addresses: ${ipA} ${ipB}`);
  const subnet = jailSubnet();
  for (const ip of [ipA, ipB]) checkJailAddress(ip, subnet);

  assert.equal(linkNames((await execIn(a, 'ip -o link show')).stdout), ['lo', 'eth0']);
  assert.match((await execIn(b, 'ip route show default')).stdout, new RegExp(`default via ${GATEWAY} dev eth0`));
  const ports = sh(`ip -o link show master ${BRIDGE}`).stdout;
  for (const ip of [ipA, ipB]) assert.ok(ports.includes(vethNames(subnet, ip).host + '@'), `${vethNames(subnet, ip).host} is a port of ${BRIDGE}:\n${ports}`);

  for (const [from, to] of [[a, ipB], [b, ipA], [a, GATEWAY], [b, GATEWAY]] as const) {
    const ping = await execIn(from, `ping -c1 -W2 ${to}`);
    assert.is(ping.code, 0, `jail ${from.name} pings ${to}: ${ping.stdout}${ping.stderr}`);
  }
  const seen = await waitFor("jail a's httpd, from jail b", async () => (await execIn(b, `timeout 3 wget -qO- http://${ipA}:8080/cgi-bin/who`)).stdout.trim());
  assert.is(seen, ipB, 'a sees b by its own address: no NAT between jails');

  const resolv = (await execIn(a, 'cat /etc/resolv.conf')).stdout;
  assert.is(resolv, upstreamResolvConf().text);
  assert.not.match(resolv, /nameserver 127\./);

  const picture = b.err();
  for (const want of [`${BRIDGE}   bridge   ${GATEWAY}/24`, `${vethNames(subnet, ipB).host} `, `${ipB}/24`, `${vethNames(subnet, ipA).host} (${ipA})`, `network namespace of pid ${b.init}`]) {
    assert.ok(picture.includes(want), `the topology shows ${want}:\n${picture}`);
  }

  const mac = () => readFileSync(`/sys/class/net/${BRIDGE}/address`, 'utf8').trim();
  const gatewayMac = mac();
  assert.is(readFileSync(`/sys/class/net/${BRIDGE}/addr_assign_type`, 'utf8').trim(), '3', "the bridge's MAC was set, not borrowed from a port");
  assert.is(await stopJail(a), 143);
  assert.ok(existsSync(`/sys/class/net/${BRIDGE}`), 'the bridge stays while b runs');
  assert.is(mac(), gatewayMac, "a leaving does not change the gateway's MAC under b's ARP cache");
  assert.is((await execIn(b, `ping -c1 -W2 ${GATEWAY}`)).code, 0, 'b still reaches the gateway');
  await stopJail(b);
  // after.each: the last jail out took the bridge, the rules, its lease and ip_forward back
});

test('bridge: jails started at the same moment get different addresses (leases across processes)', async () => {
  const jails = await Promise.all(['p1', 'p2', 'p3'].map((n) => startJail(n, [], idle)));
  const addresses = jails.map((j) => addressOf(j.out())!);
  assert.is(new Set(addresses).size, 3, `three addresses: ${addresses}`);
  const leases = readLeases().filter((l) => l.jail.startsWith(`baj-${NAME}p`));
  assert.equal(leases.map((l) => l.ip).sort(), [...addresses].sort(), 'one lease file per address');
  assert.equal(leases.map((l) => l.pid).sort(), jails.map((j) => j.launcher.pid).sort(), 'held by the launchers');
  assert.is(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), '1');
  await Promise.all(jails.map(stopJail));
});

test('bridge: JAIL_SUBNET moves the bridge and the jails to another subnet', async () => {
  const r = await runStep(5, ['--name', `${NAME}sub`, '--', 'sh', '-c', 'ip -4 -o addr show dev eth0; ping -c1 -W2 10.232.5.1 >/dev/null && echo gateway-answers'], { env: { JAIL_SUBNET: '10.232.5.0/28' } });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /inet 10\.232\.5\.2\/28/);
  assert.match(r.stdout, /^gateway-answers$/m);
});

// ---------------------------------------------------------------------------
// NAT and published ports

test("NAT: a jail reaches a test-made 'outside world' with the host's address as its source", async () => {
  const w = await makeWorld();
  await serveInWorld(w, 7001);
  const a = await startJail('nat', [], idle);
  const ipA = addressOf(a.out())!;
  const ask = () => execIn(a, `nc ${WORLD.addr} 7001 </dev/null`);
  assert.is((await ask()).stdout.trim(), WORLD.host, `the world sees the host, not ${ipA}`);
  await fails(run('nsenter', [`--net=${w.netns}`, 'ping', '-c1', '-W1', ipA]), 'the world has no route to the jails: only NAT brings the answer back');
  firewallOn();
  try {
    assert.is((await ask()).stdout.trim(), WORLD.host, "the step's FORWARD accepts let it out past a firewall that drops the rest");
  } finally {
    firewallOff();
  }
});

test('publish: the jail port answers on the host port, from 127.0.0.1 (proxy) and from another namespace (DNAT)', async () => {
  const [w, a, b] = await Promise.all([makeWorld(), startJail('pub', ['--publish', '23399:8080'], httpd(8080)), startJail('peer', [], idle)]);
  const ipA = addressOf((await execIn(a, 'ip -4 -o addr show dev eth0')).stdout)!;
  const fromWorld = async () => (await getFromWorld(w, `http://${WORLD.host}:23399/cgi-bin/who`)).stdout.trim();

  assert.is(await waitFor("the published port, from the host's 127.0.0.1", () => httpGet('127.0.0.1', 23399)), GATEWAY, 'the launcher proxy connects from the gateway');
  assert.is(await fromWorld(), WORLD.addr, 'from another namespace: DNAT keeps the real client address');
  assert.is((await execIn(b, `timeout 3 wget -qO- http://${GATEWAY}:23399/cgi-bin/who`)).stdout.trim(), GATEWAY, 'from another jail, via the host: the proxy');
  assert.match(sh('iptables -t nat -S PREROUTING').stdout, new RegExp(`--dport 23399 .*--comment baj-${NAME}pub-publish-23399 .*--to-destination ${ipA.replace(/\./g, '\\.')}:8080`));

  firewallOn();
  try {
    assert.is(await fromWorld(), WORLD.addr, 'ctstate DNAT lets the published port past the firewall');
    must(`nsenter --net=${w.netns} ip route add 10.231.0.0/24 via ${WORLD.host}`); // a world that knows the way, and tries the jail directly
    await fails(getFromWorld(w, `http://${ipA}:8080/cgi-bin/who`), 'but nothing unpublished gets in');
  } finally {
    firewallOff();
  }
  await stopJail(b);
  await stopJail(a);
  await fails(httpGet('127.0.0.1', 23399), 'with the jail gone, nothing listens on the host port');
});

/** What listens on a TCP port of the host, as ss prints it: 127.0.0.1:23393, 0.0.0.0:23393, *:23393 … */
const listenersOn = (port: number): string[] => sh(`ss -Hltn 'sport = :${port}'`).stdout.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3]!);

test('publish 127.0.0.1:HOSTPORT:PORT: the port answers on 127.0.0.1 only, and its DNAT rule carries -d 127.0.0.1', async () => {
  const [w, a, b] = await Promise.all([makeWorld(), startJail('lopub', ['--publish', '127.0.0.1:23393:8080'], httpd(8080)), startJail('peer', [], idle)]);
  const ipA = addressOf((await execIn(a, 'ip -4 -o addr show dev eth0')).stdout)!;
  assert.is(await waitFor("the published port, on the host's 127.0.0.1", () => httpGet('127.0.0.1', 23393)), GATEWAY, 'the launcher proxy answers on loopback');
  assert.equal(listenersOn(23393), ['127.0.0.1:23393'], 'the proxy listens on 127.0.0.1 only');
  await fails(httpGet(GATEWAY, 23393), `not on the host's bridge address ${GATEWAY}`);
  await fails(httpGet(WORLD.host, 23393), `not on the host's address ${WORLD.host}, from the host`);
  await fails(getFromWorld(w, `http://${WORLD.host}:23393/cgi-bin/who`), 'not from another namespace: no DNAT for that address');
  await fails(execIn(b, `timeout 3 wget -qO- http://${GATEWAY}:23393/cgi-bin/who`), 'not from another jail');
  const rule = sh('iptables -t nat -S PREROUTING').stdout.split('\n').find((l) => l.includes(`baj-${NAME}lopub-publish-23393`));
  assert.ok(rule, 'a DNAT rule for the port');
  assert.match(rule!, /-d 127\.0\.0\.1\/32 /);
  assert.match(rule!, new RegExp(`--dport 23393 .*--to-destination ${ipA.replace(/\./g, '\\.')}:8080`));
  assert.not.match(rule!, /addrtype/, 'one address, not every local one');
  // a neighbour routing 127.0.0.1 to us would match that DNAT rule: raw PREROUTING drops it unless it came in on lo
  const guard = sh('iptables -t raw -S PREROUTING').stdout.split('\n').find((l) => l.includes(`baj-${NAME}lopub-publish-23393-lo-only`));
  assert.ok(guard, 'a raw rule keeps 127.0.0.1:23393 to lo');
  assert.match(guard!, /-d 127\.0\.0\.1\/32 ! -i lo -p tcp -m tcp --dport 23393 .*-j DROP/);
  await stopJail(b);
  await stopJail(a);
  await fails(httpGet('127.0.0.1', 23393), 'with the jail gone, nothing listens on the host port');
});

test("publish HOSTIP:HOSTPORT:PORT on another host address (the test's own): DNAT and proxy there, nothing on 127.0.0.1", async () => {
  const w = await makeWorld(); // WORLD.host, 198.51.100.1, is an address of this host that the test made
  const a = await startJail('hostip', ['--publish', `${WORLD.host}:23392:8080`], httpd(8080));
  assert.is(await waitFor(`the published port on ${WORLD.host}, from another namespace`, async () => (await getFromWorld(w, `http://${WORLD.host}:23392/cgi-bin/who`)).stdout.trim()), WORLD.addr, 'DNAT, with the real client address');
  assert.is(await httpGet(WORLD.host, 23392), GATEWAY, 'from the host itself, to that address: the proxy');
  assert.equal(listenersOn(23392), [`${WORLD.host}:23392`], `the proxy listens on ${WORLD.host} only`);
  await fails(httpGet('127.0.0.1', 23392), 'not on 127.0.0.1');
  await fails(httpGet(GATEWAY, 23392), `not on ${GATEWAY}`);
  assert.match(sh('iptables -t nat -S PREROUTING').stdout, new RegExp(`-d ${WORLD.host.replace(/\./g, '\\.')}/32 .*--dport 23392 .*--comment baj-${NAME}hostip-publish-23392 `));
  await stopJail(a);
});

test.run();
