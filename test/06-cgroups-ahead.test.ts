// Step 06's joinAhead, for step 10's pool, proven on the real kernel (v1 or
// hybrid here, pure v2 under npm run test:vm): a jail's cgroup made and a
// waiting process moved in before the jail is asked for; then
// cgroupHook({ joined }) writes the jail's limits and moves nobody; its
// removal leaves nothing; a cgroup made for another jail is refused.
//   node --import tsx test/06-cgroups-ahead.test.ts -c=false
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as assert from 'uvu/assert';
import { CleanupStack } from '../lib/cleanup.ts';
import type { JailSpec } from '../lib/spec.ts';
import { PREFIX } from '../lib/state.ts';
import { WORKSHOP_CGROUP } from '../steps/06-cgroups/cgroupfs.ts';
import { cgroupHook, joinAhead } from '../steps/06-cgroups/cgroups.ts';
import { cgroupPaths, detectCgroups } from '../steps/06-cgroups/hierarchy.ts';
import { removeCgroup } from '../steps/06-cgroups/removal.ts';
import { assertHostUnchanged, hostState, isRoot, rootSuite, type HostState } from './helpers.ts';

const test = rootSuite('06 cgroups: a cgroup joined ahead (step 10\'s pool)');
let before: HostState;
test.before.each(() => {
  before = hostState();
});
test.after.each(async () => {
  await assertHostUnchanged(before);
});

const tree = isRoot ? detectCgroups() : undefined;
const specFor = (name: string): JailSpec => ({ name, rootfs: '/', namespaces: [], command: ['true'], env: {}, pivot: false, binds: [] });
/** The controllers whose cgroup of `pid` is the jail's, from /proc/PID/cgroup ("0::/path" on v2, "N:cpu,cpuacct:/path" on v1). */
const inJail = (pid: number, name: string): string[] =>
  readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l.endsWith(`/${WORKSHOP_CGROUP}/${name}`))
    .flatMap((l) => (l.startsWith('0::') ? ['v2'] : l.split(':')[1]!.split(',')));
const pidsMax = (name: string) => readFileSync(`${tree!.roots.pids}/${WORKSHOP_CGROUP}/${name}/pids.max`, 'utf8').trim();

/** A process that waits, as a pooled init waits for "go". */
function waiter() {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  return { pid: child.pid!, exited, stop: () => (child.kill('SIGKILL'), exited) };
}

test("joinAhead moves the waiting process into every controller's cgroup; the hook then writes the jail's limits and moves nobody", async () => {
  const name = `${PREFIX}-ahead${process.pid}`;
  const w = waiter();
  const cleanup = new CleanupStack();
  try {
    const cg = await joinAhead(name, { pids: 500 }, w.pid);
    cleanup.defer('the cgroup, if the hook never took it', () => removeCgroup(cg));
    const joined = inJail(w.pid, name);
    if (tree!.version === 2) assert.equal(joined, ['v2']);
    else for (const c of ['cpu', 'memory', 'pids']) assert.ok(joined.includes(c), `in the ${c} cgroup before any hook ran: ${joined}`);
    assert.is(pidsMax(name), '500', "the shape's limits, written ahead");

    const hook = cgroupHook({ pids: 64, memory: 64 * 2 ** 20 }, { joined: cg });
    await hook.prepare!(specFor(name), cleanup);
    assert.is(pidsMax(name), '64', "the jail's own limits, written when it is asked for");
    await hook.attach!(specFor(name), w.pid, cleanup);
    assert.equal(inJail(w.pid, name), joined, 'still there, moved by nobody');
  } finally {
    await cleanup.unwind(); // the hook's removal kills what is inside, as for any jail
  }
  await w.exited;
  assert.equal(cgroupPaths(name), [], 'nothing of it is left');
});

test("a hook given a cgroup made for another jail refuses, and makes nothing", async () => {
  const name = `${PREFIX}-ahead${process.pid}-a`;
  const w = waiter();
  try {
    const cg = await joinAhead(name, {}, w.pid);
    try {
      const hook = cgroupHook({}, { joined: cg });
      const cleanup = new CleanupStack();
      const refused = await hook.prepare!(specFor(`${name}-other`), cleanup).then(() => undefined, (err: Error) => err);
      assert.match(refused?.message ?? 'no error', /is not this jail's/);
      await cleanup.unwind();
      assert.equal(cgroupPaths(`${name}-other`), []);
    } finally {
      await removeCgroup(cg);
    }
  } finally {
    await w.stop();
  }
  assert.equal(cgroupPaths(name), []);
});

test.run();
