// Step 10's daemon proven against real jails: every endpoint through the
// socket and through the client, a few hundred malformed requests that
// make nothing, 20 bridged jails at once, a daemon SIGKILLed and started
// again (live-restore), and the TCP port that needs its token. A JAIL_HOME
// and a daemon socket of its own under /var/tmp.
//   node --import tsx test/10-wocker.test.ts -c=false
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { capabilityMask, DOCKER_DEFAULT_CAPS } from '../steps/08-hardening/capabilities.ts';
import { ensureImage } from '../steps/09-layers/store.ts';
import { isRoot, jailSuite, repo, runNode, waitFor } from './helpers.ts';
import { api, createJail, exec, rawRequest, removeEveryJail, startDaemon, stopDaemon, view, wocker } from './wocker.ts';

const home = isRoot ? mkdtempSync('/var/tmp/baj-test-10-') : '/nonexistent';
if (isRoot) chmodSync(home, 0o755); // the jail's root walks through it to its layers
process.env.JAIL_HOME = home;
process.env.JAIL_QUIET = '1';
const SOCK = join(home, 'wocker.sock');
process.env.WOCKER_SOCK = SOCK;
// jails start cold here, each its own Node starts; 10-wocker-pool.test.ts proves the pool
process.env.WOCKER_POOL = '0';

const test = jailSuite('step 10: the wocker daemon', { afterEach: () => removeEveryJail() });

test.before(async () => {
  if (!isRoot) return;
  await ensureImage('busybox'); // made once here, not by 20 shims at once
  await startDaemon();
});
test.after(async () => {
  if (!isRoot) return;
  // a failed hook ends the suite early: its jails must not outlive their home
  await removeEveryJail().catch((err) => console.error(`removing the jails: ${err.message}`));
  await stopDaemon();
  rmSync(home, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Every endpoint

test('POST /jails runs a locked jail; GET, logs, exec, stop and DELETE work through the socket', async () => {
  const id = await createJail({ image: 'busybox', hostname: 'hello', cmd: ['sh', '-c', 'echo hi; sleep 30'] });
  assert.match(id, /^[0-9a-f]{12}$/);
  const list = (await api('GET', '/jails')).json;
  assert.is(list.length, 1);
  assert.is(list[0].state, 'running');
  assert.ok(list[0].pid > 1);
  await waitFor('the log to say hi', async () => (await api('GET', `/jails/${id}/logs`)).text === 'hi\n');
  const logs = await api('GET', `/jails/${id}/logs`);
  assert.match(String(logs.headers['content-type']), /^text\/plain/);

  assert.equal(await exec(id, ['hostname']), { exitCode: 0, output: 'hello\n' });
  const status = (await exec(id, ['cat', '/proc/self/status'])).output;
  const capBnd = BigInt('0x' + /CapBnd:\s*([0-9a-f]+)/.exec(status)![1]);
  assert.is(capBnd, capabilityMask(DOCKER_DEFAULT_CAPS), "an exec'd command keeps Docker's 14 capabilities, no more");
  assert.match(status, /Seccomp:\s*2/, 'and the seccomp filter');
  assert.equal(await exec(id, ['sh', '-c', 'echo out; echo err >&2; exit 3']), { exitCode: 3, output: 'out\nerr\n' });
  assert.is((await exec(id, ['no-such-program'])).exitCode, 127);

  const del = await api('DELETE', `/jails/${id}`);
  assert.is(del.status, 409, 'a running jail is not removed without force');
  const stopped = await api('POST', `/jails/${id}/stop`);
  assert.is(stopped.status, 200);
  assert.is(stopped.json.state, 'exited');
  assert.is(stopped.json.exitCode, 143, 'sh ended by SIGTERM');
  assert.is((await api('POST', `/jails/${id}/exec`, { cmd: ['true'] })).status, 409, 'no exec in an exited jail');
  assert.is((await api('DELETE', `/jails/${id}`)).status, 200);
  assert.is((await api('GET', `/jails/${id}`)).status, 404);
  assert.not.ok(existsSync(join(home, 'run/wocker/jails', id)), 'the record is gone');
});

test("the seed's GET /run?rootfs=&hostname=&cmd= makes a jail; logs ?follow=1 ends with it", async () => {
  const r = await api('GET', '/run?rootfs=busybox&hostname=seed&cmd=/bin/sh&cmd=-c&cmd=hostname%3B%20echo%20seeded');
  assert.is(r.status, 201, r.text);
  const followed = await api('GET', `/jails/${r.json.id}/logs?follow=1`);
  assert.is(followed.text, 'seed\nseeded\n');
  const v = await view(r.json.id);
  assert.is(v.state, 'exited');
  assert.is(v.exitCode, 0);
});

test('GET /images lists step 09\'s images; an unknown image is 404 and makes nothing', async () => {
  const images = (await api('GET', '/images')).json as { name: string }[];
  assert.ok(images.some((i) => i.name === 'busybox'));
  const r = await api('POST', '/jails', { image: 'nosuch' });
  assert.is(r.status, 404);
  assert.type(r.json.error, 'string');
});

test("a command the image lacks is 400 (the jail never ran), and leaves no record: the 201 comes only once the target runs", async () => {
  const r = await api('POST', '/jails', { image: 'busybox', cmd: ['no-such-command'] });
  assert.is(r.status, 400, r.text);
  assert.match(r.json.error, /no-such-command: command not found in image busybox/);
  assert.equal((await api('GET', '/jails')).json, [], 'no record of it');
});

test('the client: run -d, ps, logs, exec, stop, rm, images; run without -d streams the log and exits with the jail\'s code', async () => {
  const run = await wocker('run', '--hostname', 'cli', '-d', 'busybox', '--', 'sh', '-c', 'echo hi; sleep 30');
  assert.is(run.code, 0, run.stderr);
  const id = run.stdout.trim();
  assert.match(id, /^[0-9a-f]{12}$/);
  const ps = await wocker('ps');
  assert.match(ps.stdout, new RegExp(`${id}\\s+busybox\\s+cli\\s+running`));
  await waitFor('the log', async () => (await wocker('logs', id)).stdout === 'hi\n');
  const ex = await wocker('exec', id, '--', 'hostname');
  assert.is(ex.stdout, 'cli\n');
  assert.is((await wocker('exec', id, '--', 'sh', '-c', 'exit 5')).code, 5);
  const rm = await wocker('rm', id);
  assert.is(rm.code, 1);
  assert.match(rm.stderr, /is running; stop it first/);
  assert.match((await wocker('stop', id)).stdout, /exited \(143\)/);
  assert.is((await wocker('rm', id)).code, 0);
  assert.match((await wocker('images')).stdout, /busybox/);

  const attached = await wocker('run', '--rm', 'busybox', '--', 'sh', '-c', 'echo one; echo two; exit 7');
  assert.is(attached.code, 7, attached.stderr);
  assert.is(attached.stdout, 'one\ntwo\n');
  const err = await wocker('logs', '000000000000');
  assert.is(err.code, 1);
  assert.match(err.stderr, /no jail 000000000000/);
  const none = await runNode([join(repo, 'bin/wocker.ts'), 'ps'], { env: { WOCKER_SOCK: join(home, 'nobody.sock') } });
  assert.is(none.code, 1);
  assert.match(none.stderr, /the wocker daemon is not running: sudo npm run step 10/);
});

// ---------------------------------------------------------------------------
// Fuzz: malformed requests, from a fixed seed

/** mulberry32: the same "random" requests on every run. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function malformedRequests(n: number): { method: string; path: string; body?: string }[] {
  const rnd = prng(10);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const junk = (len: number) => Array.from({ length: len }, () => String.fromCharCode(Math.floor(rnd() * 128))).join('');
  const bad = {
    image: ['../etc', 'a/b', '/abs', '', 'UPPER', 'x'.repeat(65), 'bu\u0000sy', 'busy\nbox', 7, ['busybox'], {}], // null is "not given": busybox
    hostname: ['', '-x', 'a_b', 'x'.repeat(65), 'a..b', 'h\u0007', 'h ost', '../../etc', 12, true, 'é'],
    cmd: ['sh -c true', [], [1], [null], ['a\u0000b'], Array(300).fill('x'), ['x'.repeat(5000)], {}, 0],
    net: ['bridged', 'container:x', '', 3, ['none']],
    memory: ['lots', '-1', '0x10', '1T1', {}, '99999999G'],
    cpus: ['many', '-2', '1e9', '', []],
    pids: ['0', '-1', '1e12', '99999', 'x'],
    publish: ['x', [1], ['127.0.0.1:99999:80'], [':::'], '80:80'],
    privileged: ['yes', 1, null, 'true'],
  } as Record<string, unknown[]>;
  const valid = { image: 'busybox', hostname: 'fz', cmd: ['true'] };
  const out: { method: string; path: string; body?: string }[] = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 8;
    if (kind <= 2) {
      // one wrong field in an otherwise valid body (net is set to bridge for publish, so that only the value is wrong)
      const field = pick(Object.keys(bad));
      const body: Record<string, unknown> = { ...valid, ...(field === 'publish' ? { net: 'bridge' } : {}), [field]: pick(bad[field]!) };
      if (rnd() < 0.3) body[pick(['extra', '__proto__x', 'Image', 'id'])] = 1;
      out.push({ method: 'POST', path: '/jails', body: JSON.stringify(body) });
    } else if (kind === 3) {
      out.push({ method: 'POST', path: pick(['/jails', '/jails/000000000000/exec']), body: pick(['', ' ', '{', '[]', 'null', '"x"', '1', '{"a":}', junk(40), '{"cmd":', '\u0000']) });
    } else if (kind === 4) {
      out.push({ method: 'POST', path: '/jails', body: JSON.stringify({ ...valid, cmd: ['x'.repeat(70 * 1024)] }) });
    } else if (kind === 5) {
      const path = pick(['/jails/..', '/jails/../images', '/jails/%2e%2e/logs', '/jails/ABCDEF012345', '/jails/0123456789ab', '/jails/0123456789ab/logs', '/jails/0123456789abc', '/', '/jail', '/jails/', '//jails', '/images/busybox', '/jails/x/exec', '/run/../jails', `/${encodeURIComponent(junk(8))}`, '/jails/0123456789ab/stop', '/jails/0123456789ab?force=1']);
      out.push({ method: pick(['GET', 'POST', 'DELETE']), path });
    } else if (kind === 6) {
      const m = pick([['PUT', '/jails'], ['PATCH', '/jails'], ['DELETE', '/jails'], ['POST', '/images'], ['GET', '/jails/0123456789ab/exec'], ['PUT', '/jails/0123456789ab'], ['DELETE', '/run'], ['POST', '/jails/0123456789ab/logs']] as const);
      out.push({ method: m[0], path: m[1] });
    } else {
      const q = pick(['rootfs=../x&cmd=sh', 'cmd=', 'hostname=a%00b&cmd=sh', 'hostname=' + 'x'.repeat(100) + '&cmd=sh', 'rootfs=busybox', 'cmd=sh&evil=1', 'rootfs=%2Fetc&cmd=sh', 'cmd=a%00b']);
      out.push({ method: 'GET', path: '/run?' + q });
    }
  }
  return out;
}

test('a few hundred malformed requests: every one a 4xx with a JSON error; nothing made; the daemon still answers', async () => {
  const requests = malformedRequests(320);
  for (let i = 0; i < requests.length; i += 16) {
    await Promise.all(
      requests.slice(i, i + 16).map(async (r) => {
        const reply = await api(r.method, r.path, r.body);
        const what = `${r.method} ${r.path} ${(r.body ?? '').slice(0, 120)} -> ${reply.status} ${reply.text.slice(0, 200)}`;
        assert.ok(reply.status >= 400 && reply.status < 500, what);
        assert.type(reply.json?.error, 'string', what);
        if (reply.status === 405) assert.ok(reply.headers.allow, `405 says what is allowed: ${what}`);
      }),
    );
  }
  for (const raw of ['GARBAGE\r\n\r\n', 'GET /jails HTTP/1.1\r\nHost: x\r\nX: ' + 'y'.repeat(20000) + '\r\n\r\n', 'POST /jails HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n']) {
    const answer = await rawRequest(raw);
    assert.match(answer, /^HTTP\/1\.1 4\d\d .*\r\n[\s\S]*\{"error":/, `raw ${raw.slice(0, 30)}: ${answer.slice(0, 100)}`);
  }
  const ping = await api('GET', '/_ping');
  assert.is(ping.status, 200, 'the daemon still answers');
  assert.equal((await api('GET', '/jails')).json, [], 'no record was made');
});

// ---------------------------------------------------------------------------
// Load

test('20 jails created at once on the bridge: all run, each with its own address, each answers exec', async () => {
  const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => createJail({ hostname: `load${i}`, net: 'bridge', cmd: ['sleep', '300'] })));
  const jails = (await api('GET', '/jails')).json as { id: string; state: string; ip: string | null; hostname: string }[];
  assert.is(jails.length, 20);
  assert.ok(jails.every((j) => j.state === 'running'), JSON.stringify(jails.map((j) => j.state)));
  const ips = jails.map((j) => j.ip);
  assert.ok(ips.every((ip) => ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip)), JSON.stringify(ips));
  assert.is(new Set(ips).size, 20, 'distinct addresses');
  await Promise.all(
    jails.map(async (j) => {
      const r = await exec(j.id, ['sh', '-c', 'hostname; ip -4 -o addr show eth0 2>/dev/null || ifconfig eth0']);
      assert.is(r.exitCode, 0, r.output);
      assert.ok(r.output.startsWith(j.hostname + '\n'), r.output);
      assert.ok(r.output.includes(j.ip!), `${j.ip} in ${r.output}`);
    }),
  );
  const removed = await Promise.all(ids.map((id) => api('DELETE', `/jails/${id}?force=1`)));
  assert.ok(removed.every((r) => r.status === 200), JSON.stringify(removed.map((r) => r.text)));
});

// ---------------------------------------------------------------------------
// Live-restore

test('a daemon killed with SIGKILL: the next one lists its jails running, exec, stop and rm work; one that ended meanwhile shows its exit code', async () => {
  const ids = await Promise.all([0, 1, 2].map((i) => createJail({ hostname: `live${i}`, cmd: ['sleep', '300'] })));
  const ender = await createJail({ hostname: 'ender', cmd: ['sleep', '300'] });
  await stopDaemon('SIGKILL');
  assert.ok(existsSync(SOCK), 'a SIGKILLed daemon leaves its socket');
  // while no daemon runs, the ender's command ends: SIGTERM to its PID 1, from the host
  const enderState = JSON.parse(readFileSync(join(home, 'run/wocker/jails', ender, 'state.json'), 'utf8'));
  process.kill(enderState.initPid, 'SIGTERM'); // PID 1 forwards it to sleep, which dies of it: 128+15
  await startDaemon(); // the stale socket is taken over
  for (const id of ids) {
    const v = await view(id);
    assert.is(v.state, 'running', id);
    assert.is((await exec(id, ['hostname'])).output, `${v.hostname}\n`);
  }
  const ended = await waitFor('the ender to show as exited', async () => {
    const v = await view(ender);
    return v.state === 'exited' && v;
  });
  assert.is(ended.exitCode, 143);
  assert.is((await api('POST', `/jails/${ids[0]}/stop`)).json.state, 'exited');
  for (const id of [...ids, ender]) assert.is((await api('DELETE', `/jails/${id}?force=1`)).status, 200);
});

test('a second daemon on the same socket is refused while the first answers', async () => {
  const r = await runNode([join(repo, 'bin/wocker.ts'), 'daemon'], { env: { WOCKER_SOCK: SOCK } });
  assert.is(r.code, 1);
  assert.match(r.stderr, /another wocker daemon answers/);
  assert.is((await api('GET', '/_ping')).status, 200);
});

// ---------------------------------------------------------------------------
// TCP

test('--listen 127.0.0.1:PORT needs the bearer token (401 and nothing made without it); 0.0.0.0 is refused', async () => {
  const refused = await runNode([join(repo, 'bin/wocker.ts'), 'daemon', '--listen', '0.0.0.0:23750'], { env: { WOCKER_SOCK: join(home, 'other.sock') } });
  assert.is(refused.code, 2);
  assert.match(refused.stderr, /only a loopback address/);
  await stopDaemon();
  const port = 23000 + (process.pid % 1000);
  await startDaemon(['--listen', `127.0.0.1:${port}`]);
  const token = readFileSync(join(home, 'run/wocker/token'), 'utf8').trim();
  assert.match(token, /^[0-9a-f]{64}$/);
  const body = { hostname: 'tcp', cmd: ['sleep', '30'] };
  assert.is((await api('POST', '/jails', body, { port })).status, 401);
  assert.is((await api('POST', '/jails', body, { port, headers: { authorization: 'Bearer wrong' } })).status, 401);
  assert.is((await api('GET', '/jails', undefined, { port, headers: { authorization: `Basic ${token}` } })).status, 401);
  assert.equal((await api('GET', '/jails')).json, [], 'nothing was made');
  const auth = { authorization: `Bearer ${token}` };
  const made = await api('POST', '/jails', body, { port, headers: auth });
  assert.is(made.status, 201, made.text);
  assert.is((await api('POST', `/jails/${made.json.id}/exec`, { cmd: ['hostname'] }, { port, headers: auth })).json.output, 'tcp\n');
  assert.is((await api('DELETE', `/jails/${made.json.id}?force=1`, undefined, { port, headers: auth })).status, 200);
  await stopDaemon();
  await startDaemon();
});

test.run();
