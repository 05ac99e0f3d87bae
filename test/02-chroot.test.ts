import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { jailSuite, runStep } from './helpers.ts';

const test = jailSuite('step 02: chroot');
const env = { JAIL_QUIET: '1' };

test('inside the chroot only the rootfs files are visible: a host marker file is not', async () => {
  const dir = mkdtempSync('/tmp/baj-marker-');
  const marker = join(dir, 'marker');
  writeFileSync(marker, 'host secret\n');
  try {
    const r = await runStep(2, ['--', 'cat', marker], { env });
    assert.is.not(r.code, 0);
    assert.not.match(r.stdout, /host secret/);
    const ls = await runStep(2, ['--', 'ls', '/'], { env });
    assert.is(ls.code, 0);
    assert.match(ls.stdout, /\bbin\b[\s\S]*\bproc\b/);
    assert.not.match(ls.stdout, /\bwork\b|\bboot\b/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("the command's exit status passes through", async () => {
  const r = await runStep(2, ['--', 'sh', '-c', 'exit 42'], { env });
  assert.is(r.code, 42);
});

test("the weakness: root in a chroot sees the host's whole process table", async () => {
  const r = await runStep(2, ['--weaknesses'], { env });
  assert.is(r.code, 0, r.stderr);
  const n = Number(r.stdout.match(/… (\d+) processes in all/)?.[1]);
  const hostCount = (await import('node:fs')).readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length;
  assert.ok(n > 20 && Math.abs(n - hostCount) < 30, `saw ${n} processes, host has ${hostCount}`);
  assert.match(r.stdout, /^\s+1 \S+/m, "the host's PID 1 is in the list");
});

test("the escape demonstration reaches the host's root", async () => {
  const r = await runStep(2, ['--escape'], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /inside the chroot, \S+ does not exist/);
  assert.match(r.stdout, /after the escape, \S+ says: a file on the host, outside the rootfs/);
});

test('bad input: a rootfs that does not exist is one clear sentence', async () => {
  const r = await runStep(2, ['--rootfs', '/nonexistent/rootfs', '--', 'true'], { env });
  assert.is(r.code, 1);
  assert.match(r.stderr, /rootfs \/nonexistent\/rootfs does not exist/);
  assert.match(r.stderr, /npm run step 1/);
  assert.not.match(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
});

test('bad input: an unknown flag', async () => {
  const r = await runStep(2, ['--wat'], { env });
  assert.is(r.code, 2);
  assert.match(r.stderr, /unknown flag --wat/);
});

test.run();
