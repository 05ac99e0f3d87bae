// Step 05 when things go wrong: bad input is refused with one clear message
// and leaves nothing half-made; a launcher killed with SIGKILL leaves its
// address and rules behind, which the next jail reclaims or npm run clean
// (cleanNetwork) removes, also next to a running jail. The jails and the
// snapshots are network.ts's.
//   node --import tsx test/05-network-clean.test.ts
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { runDir } from '../lib/state.ts';
import { BRIDGE } from '../steps/05-network-bridge/addresses.ts';
import { cleanNetwork } from '../steps/05-network-bridge/clean.ts';
import { runStep, waitFor } from './helpers.ts';
import { addressOf, assertRefused, assertUnchanged, beforeThisTest, execIn, GATEWAY, httpd, httpGet, idle, makeWorld, must, NAME, networkSuite, removeWorld, snapshot, startJail, stopJail } from './network.ts';

// cleanNetwork() runs in this process; the jails' launchers inherit it too.
process.env.JAIL_QUIET = '1';
delete process.env.JAIL_SUBNET;

const test = networkSuite('step 05: bad input, killed launchers and npm run clean');

// ---------------------------------------------------------------------------
// Bad input: a clear message, nothing half-made

test('bad input is refused with a clear message and leaves nothing behind', async () => {
  const jail = (flags: string[], env?: Record<string, string>) => runStep(5, ['--name', `${NAME}bad`, ...flags, '--', 'true'], { env });
  const listen = (port: number, host: string) => new Promise<Server>((r) => {
    const s = createServer().listen(port, host, () => r(s));
  });
  const taken = [await listen(23398, '127.0.0.1'), await listen(23397, '0.0.0.0')];
  await makeWorld();
  try {
    // independent of each other: run side by side
    const [outside, mode, format, hostPublish, noneIp, twice, loopback, wildcard, overlap, notHostIp, notIPv4] = await Promise.all([
      jail(['--ip', '10.232.0.9']),
      jail(['--net', 'bridged']),
      jail(['--publish', '23398']),
      jail(['--net', 'host', '--publish', '23398:80']),
      jail(['--net', 'none', '--ip', '10.231.0.9']),
      jail(['--publish', '23396:22', '--publish', '23396:80']),
      jail(['--publish', '23398:8080']),
      jail(['--publish', '23397:8080']),
      jail([], { JAIL_SUBNET: '198.51.100.0/25' }),
      jail(['--publish', '192.0.2.99:23390:8080']),
      jail(['--publish', '127.0.0.256:23390:8080']),
    ]);
    assertRefused(outside!, /10\.232\.0\.9 is outside the jail subnet 10\.231\.0\.0\/24/);
    assertRefused(mode!, /unknown network mode 'bridged'/);
    assertRefused(format!, /--publish '23398' is not HOSTPORT:JAILPORT/);
    assertRefused(hostPublish!, /need --net bridge/, false);
    assertRefused(noneIp!, /need --net bridge/, false);
    assertRefused(twice!, /host port 23396 is published twice/);
    assertRefused(loopback!, /host port 23398 is already taken/);
    assertRefused(wildcard!, /host port 23397 is already taken/);
    assertRefused(overlap!, /overlaps the host's route to 198\.51\.100\.0\/24/);
    assertRefused(notHostIp!, /--publish '192\.0\.2\.99:23390:8080': 192\.0\.2\.99 is not an address of this host/);
    assertRefused(notIPv4!, /'127\.0\.0\.256' is not an IPv4 address/);
  } finally {
    for (const s of taken) await new Promise((r) => s.close(r));
    await removeWorld();
  }
  await assertUnchanged(beforeThisTest(), 'after refused jails');

  const held = await startJail('held', ['--ip', '10.231.0.9'], idle);
  const whileRunning = snapshot();
  const [inUse, otherSubnet] = await Promise.all([jail(['--ip', '10.231.0.9']), jail([], { JAIL_SUBNET: '10.232.0.0/24' })]);
  assertRefused(inUse!, /10\.231\.0\.9 is already in use by jail baj-t5-held/);
  assertRefused(otherSubnet!, /baj0 already serves 10\.231\.0\.1\/24/);
  await assertUnchanged(whileRunning, 'after refused jails next to a running one');
  await stopJail(held);
});

// ---------------------------------------------------------------------------
// Killed launchers and npm run clean

/** Starts a bridged jail and SIGKILLs its launcher: no cleanup runs; the kernel takes the jail and its namespace. */
async function killedJail(name: string, flags: string[]): Promise<void> {
  const k = await startJail(name, flags, idle);
  k.launcher.kill('SIGKILL');
  await stopJail(k);
  await waitFor('the jail to die with its launcher', () => !existsSync(`/proc/${k.init}`), 5000);
}

test("a killed launcher's address is reclaimed by the next jail, and the last one out restores the host", async () => {
  await killedJail('gone', ['--ip', '10.231.0.9', '--publish', '23397:8080']);
  const left = snapshot();
  assert.ok(left.host.links.includes(BRIDGE), 'the bridge was left behind');
  assert.ok(left.files.includes('leases/10.231.0.9'), 'the lease was left behind');
  assert.ok(left.host.iptables.some((l) => l.includes(`baj-${NAME}gone-publish-23397`)), 'the DNAT rule was left behind');
  const r = await runStep(5, ['--name', `${NAME}heir`, '--ip', '10.231.0.9', '--', 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], { env: { JAIL_QUIET: '0' } });
  assert.is(r.code, 0, r.stderr);
  assert.is(addressOf(r.stdout), '10.231.0.9');
  assert.match(r.stderr, /reclaiming 10\.231\.0\.9: its launcher \(pid \d+, jail baj-t5-gone\) is gone/);
  // after.each: the heir, the last jail out, also took away what the killed one left
});

test('cleanNetwork() (npm run clean) removes what a killed launcher left, and a second run finds nothing', async () => {
  await killedJail('killed', ['--publish', '23396:8080']);
  assert.ok(snapshot().host.links.includes(BRIDGE), 'the bridge was left behind');
  await cleanNetwork();
  await assertUnchanged(beforeThisTest(), 'after cleanNetwork()');
  await cleanNetwork();
  await assertUnchanged(beforeThisTest(), 'after a second cleanNetwork()');
});

test('cleanNetwork() next to a running jail: the jail keeps its network, only the leftovers go', async () => {
  const a = await startJail('live', ['--publish', '23395:8080'], httpd(8080));
  const whileRunning = snapshot();
  writeFileSync(join(runDir(), 'leases', '10.231.0.77'), JSON.stringify({ pid: process.pid, started: 1, jail: 'baj-dead', veth: 'bajh77' }) + '\n'); // our pid, another start time: a dead launcher
  writeFileSync(join(runDir(), 'baj-dead.resolv.conf'), 'nameserver 192.0.2.53\n');
  must('ip link add bajh77 type veth peer name bajj77');
  must('iptables -w -t nat -I PREROUTING -p tcp --dport 23394 -m comment --comment baj-dead-publish-23394 -j DNAT --to-destination 10.231.0.77:22');
  await cleanNetwork();
  await assertUnchanged(whileRunning, 'after cleanNetwork() next to a running jail');
  assert.is((await execIn(a, `ping -c1 -W2 ${GATEWAY}`)).code, 0, 'the running jail still reaches its gateway');
  assert.is(await waitFor('its published port', () => httpGet('127.0.0.1', 23395)), GATEWAY, 'its published port still answers');
  await stopJail(a);
});

test.run();
