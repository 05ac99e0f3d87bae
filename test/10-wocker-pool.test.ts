// Step 10's pool proven: inits that wait in fresh namespaces before any
// request (their start time is earlier than the request's), a locked jail
// made from one with every lock and limit of a cold one, the pool filled
// again, a request of another shape started cold; a daemon SIGKILLed with
// its pool (the taken slot's jail lives on, the idle ones undo themselves);
// a slot SIGKILLed while it waits, and npm run clean after it. Each test
// starts its own daemon with WOCKER_POOL=2 and stops it, so that the host
// check after it sees no waiting slot. A JAIL_HOME of its own under /var/tmp.
//   node --import tsx test/10-wocker-pool.test.ts -c=false
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { processStart, ticksNow } from '../lib/proc.ts';
import { capabilityMask, DOCKER_DEFAULT_CAPS } from '../steps/08-hardening/capabilities.ts';
import { cgroupPaths } from '../steps/06-cgroups/hierarchy.ts';
import { ensureImage } from '../steps/09-layers/store.ts';
import { idleSlotPids } from '../steps/10-wocker/pool.ts';
import { isRoot, jailSuite, repo, runNode, waitFor } from './helpers.ts';
import { api, createJail, exec, removeEveryJail, startDaemon, stopDaemon, view, wocker } from './wocker.ts';

const home = isRoot ? mkdtempSync('/var/tmp/baj-test-10p-') : '/nonexistent';
if (isRoot) chmodSync(home, 0o755); // the jail's root walks through it to its layers
process.env.JAIL_HOME = home;
process.env.JAIL_QUIET = '1';
process.env.WOCKER_SOCK = join(home, 'wocker.sock');
const POOL = { WOCKER_POOL: '2' };
const poolDir = join(home, 'run/wocker/pool');

async function poolReady(n = 2): Promise<void> {
  await waitFor(`${n} pool slots ready`, async () => (await api('GET', '/info')).json?.pool?.ready === n, 30_000);
}

/** The jail's cgroup file, in whichever hierarchy has it (v1: one per controller; v2: one). */
function cgroupFile(id: string, file: string): string {
  const dir = cgroupPaths(`baj-w${id}`).find((d) => existsSync(join(d, file)));
  if (!dir) throw new Error(`no ${file} for jail ${id}: ${cgroupPaths(`baj-w${id}`).join(' ')}`);
  return readFileSync(join(dir, file), 'utf8').trim();
}

const test = jailSuite('step 10: the pool of waiting inits', {
  afterEach: async () => {
    await removeEveryJail(POOL);
    await stopDaemon(); // its idle slots undo themselves before it exits: the host check sees none
  },
});

test.before(async () => {
  if (isRoot) await ensureImage('busybox');
});
test.after(() => {
  if (isRoot) rmSync(home, { recursive: true, force: true });
});

test('two inits wait before any request; a locked jail takes one, with every lock and limit, and the pool fills again; --privileged starts cold', async () => {
  await startDaemon([], POOL);
  await poolReady();
  const slots = idleSlotPids();
  assert.is(slots.length, 2, 'two slot shims wait');
  assert.is(readdirSync(poolDir).length, 2, "each with its log, until a jail takes it");
  assert.match((await wocker('info')).stdout, /pool: 2 of 2 slots ready/);

  await new Promise((r) => setTimeout(r, 50)); // a tick of /proc's clock between the slots' starts and the request
  const asked = ticksNow();
  const id = await createJail({ image: 'busybox', hostname: 'pooled', memory: '64M', pids: '64', cmd: ['sh', '-c', 'echo hi; sleep 300'] });
  const v = await view(id);
  assert.is(v.state, 'running');
  assert.ok(processStart(v.pid)! < asked, `the jail's init started before it was asked for (${processStart(v.pid)} < ${asked} ticks)`);

  assert.is((await exec(id, ['hostname'])).output, 'pooled\n', 'the hostname came with "go", not with the clone');
  const status = (await exec(id, ['cat', '/proc/self/status'])).output;
  assert.is(BigInt('0x' + /CapBnd:\s*([0-9a-f]+)/.exec(status)![1]), capabilityMask(DOCKER_DEFAULT_CAPS), "Docker's 14 capabilities, no more");
  assert.match(status, /NoNewPrivs:\s*1/);
  assert.match(status, /Seccomp:\s*2/);
  assert.match((await exec(id, ['cat', '/proc/self/uid_map'])).output, /^\s*0\s+\d{5,}\s+65536\s*$/, 'root inside is an unprivileged uid outside');
  assert.is(cgroupFile(id, 'pids.max'), '64', "the request's --pids, written after it came");
  const memory = existsSync(join(cgroupPaths(`baj-w${id}`)[0]!, 'memory.max')) ? cgroupFile(id, 'memory.max') : cgroupFile(id, 'memory.limit_in_bytes');
  assert.is(memory, String(64 * 1024 * 1024), "and its --memory");
  await waitFor('the log to say hi', async () => (await api('GET', `/jails/${id}/logs`)).text === 'hi\n');
  assert.not.ok(readdirSync(poolDir).some((f) => f.startsWith(id)), "the slot's log became the jail's");

  await poolReady(); // filled again once no creation is under way
  const bridged = await createJail({ hostname: 'b', net: 'bridge', cmd: ['sleep', '300'] });
  const b = await view(bridged);
  assert.ok(processStart(b.pid)! < ticksNow(), 'a bridged jail is of the same shape: it takes a slot too');
  assert.ok((await exec(bridged, ['sh', '-c', 'ip -4 -o addr show eth0 2>/dev/null || ifconfig eth0'])).output.includes(b.ip), `its address ${b.ip} is on its eth0`);

  await poolReady();
  const cold = ticksNow();
  const priv = await createJail({ hostname: 'p', privileged: true, cmd: ['sleep', '300'] });
  assert.ok(processStart((await view(priv)).pid)! >= cold - 1, 'no user namespace: another shape, started cold');
  assert.is((await api('GET', '/info')).json.pool.ready, 2, 'and the pool untouched');

  const stopped = (await api('POST', `/jails/${id}/stop`)).json;
  assert.is(stopped.exitCode, 143, 'SIGTERM reaches the target of a pooled jail');
});

test("SIGKILL of the daemon: the taken slot's jail lives on for the next daemon; the idle slots undo themselves", async () => {
  await startDaemon([], POOL);
  await poolReady();
  const id = await createJail({ hostname: 'survivor', cmd: ['sleep', '300'] });
  await poolReady();
  await stopDaemon('SIGKILL');
  await waitFor('the idle slots to end', async () => idleSlotPids().length === 0, 10_000);
  assert.equal(readdirSync(poolDir), [], 'their logs are gone');
  assert.is(cgroupPaths(`baj-w${id}`).length > 0, true, "the jail's cgroup stays");
  await startDaemon([], POOL);
  const v = await view(id);
  assert.is(v.state, 'running', JSON.stringify(v));
  assert.is((await exec(id, ['hostname'])).output, 'survivor\n');
  assert.is((await api('POST', `/jails/${id}/stop`)).json.state, 'exited');
});

test('a slot SIGKILLed while it waits: the daemon starts another; npm run clean removes what the killed one left (its cgroup, its log)', async () => {
  await startDaemon([], POOL);
  await poolReady();
  const [victim] = idleSlotPids();
  process.kill(victim!, 'SIGKILL'); // its init dies with it (pdeathsig); its cgroup and log stay
  await waitFor('a new slot in its place', async () => !idleSlotPids().includes(victim!) && (await api('GET', '/info')).json.pool.ready === 2, 30_000);
  await stopDaemon();
  assert.is(readdirSync(poolDir).length, 1, "the killed slot's log is left");
  const cleaned = await runNode([join(repo, 'bin/clean.ts')], { env: { JAIL_QUIET: '0' } });
  assert.is(cleaned.code, 0, cleaned.stderr);
  assert.match(cleaned.stdout + cleaned.stderr, /pool slot log/);
  assert.equal(readdirSync(poolDir), []);
  // the host check after this test: no cgroup of the killed slot is left either
});

test('a pooled start that fails (a command the image lacks) is a 400 and leaves nothing: no record, no cgroup', async () => {
  await startDaemon([], POOL);
  await poolReady();
  const r = await api('POST', '/jails', { image: 'busybox', cmd: ['no-such-command'] });
  assert.is(r.status, 400, r.text);
  assert.match(r.json.error, /no-such-command: command not found in image busybox/);
  assert.equal((await api('GET', '/jails')).json, [], 'no record of it');
  // the host check after the daemon stops: the taken slot's cgroup went with its failed start
});

test.run();
