// Step 06's units and detection, proven without root: the flags people
// type (64M, 0.5, 8:0:10MB/s) into kernel units, nonsense refused with the
// flag's name and an example, the minimal device rules, and which cgroup
// hierarchy this host has (statfs). The hook on the real kernel is in
// 06-cgroups-module.test.ts, the limits inside real jails in 06-cgroups.test.ts.
//   node --import tsx test/06-cgroups-units.test.ts -c=false
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseArgs } from '../lib/cli.ts';
import { JailError } from '../lib/errors.ts';
import { cgroupMode } from '../lib/preflight.ts';
import { DEVICES } from '../steps/04-pivot-root/prison.ts';
import { cgroupFlags, limitsFromFlags, parseCpus, parseCpuset, parseDeviceRate, parsePids, parseRate, parseSize } from '../steps/06-cgroups/flags.ts';
import { cgroupMounts, detectCgroups } from '../steps/06-cgroups/hierarchy.ts';
import { MINIMAL_DEVICE_RULES } from '../steps/06-cgroups/limits.ts';

const MiB = 2 ** 20;
const tree = detectCgroups();
const units = suite('06 cgroups: units and detection');

units('sizes, rates, CPUs and pids take the units people type', () => {
  assert.is(parseSize('64M'), 64 * MiB);
  assert.is(parseSize('1.5G'), 1.5 * 1024 * MiB);
  assert.is(parseSize('512k'), 512 * 1024);
  assert.is(parseSize('1048576'), MiB);
  assert.is(parseSize('64MiB'), 64 * MiB);
  assert.is(parseSize('64mb'), 64 * MiB);
  assert.is(parseRate('10MB/s'), 10 * MiB);
  assert.is(parseRate('1M'), MiB);
  assert.is(parseRate('512k/s'), 512 * 1024);
  assert.is(parseCpus('0.5'), 0.5);
  assert.is(parseCpus('.2'), 0.2);
  assert.is(parseCpuset('0'), '0');
  assert.is(parseCpuset('0,1'), '0-1');
  assert.is(parseCpuset('0-1'), '0-1');
  assert.is(parsePids('64'), 64);
  assert.equal(parseDeviceRate('8:0:10MB/s'), { dev: '8:0', bytes: 10 * MiB });
});

/** Any block device of this host with a node in /dev (stat only: nothing reads it). */
const blockDevice = existsSync('/sys/class/block') ? readdirSync('/sys/class/block').find((d) => existsSync(`/dev/${d}`)) : undefined;
(blockDevice ? units : units.skip)(`a block device path becomes its MAJ:MIN${blockDevice ? '' : ' (this host has no block device in /dev)'}`, () => {
  const [maj, min] = readFileSync(`/sys/class/block/${blockDevice}/dev`, 'utf8').trim().split(':');
  assert.equal(parseDeviceRate(`/dev/${blockDevice}:4M`, '--io-write-bps'), { dev: `${maj}:${min}`, bytes: 4 * MiB, path: `/dev/${blockDevice}` });
});

units('nonsense, zero and negative values name the flag and give an example', () => {
  const says = (fn: () => unknown, pattern: RegExp) => {
    try {
      fn();
    } catch (err) {
      assert.instance(err, JailError);
      assert.match((err as Error).message, pattern);
      assert.is((err as JailError).exitCode, 2);
      return;
    }
    assert.unreachable(`no error for ${pattern}`);
  };
  says(() => parseSize('lots'), /^--memory: 'lots' is not a size; use e.g. 64M or 1.5G$/);
  says(() => parseSize('0'), /^--memory: '0' is not more than zero; use e.g. 64M/);
  says(() => parseSize('-5M'), /^--memory: '-5M' is not more than zero/);
  says(() => parseSize('64X'), /is not a size/);
  says(() => parseRate('fast', '--io-read-bps'), /^--io-read-bps: 'fast' is not a rate; use e.g. 10MB\/s/);
  says(() => parseCpus('half'), /^--cpus: 'half' is not a number of CPUs; use e.g. 0.5/);
  says(() => parseCpus('0'), /^--cpus: '0' is out of range/);
  says(() => parseCpus('-1'), /^--cpus: '-1' is out of range/);
  says(() => parseCpus('99'), /this machine has \d+ CPUs?, so 0.01 to \d+/);
  says(() => parseCpuset('7-3'), /^--cpuset: '7-3' is not a list of CPUs; use e.g. 0, 0-1 or 0,1/);
  says(() => parseCpuset('64'), /^--cpuset: CPU 64 is not online/);
  says(() => parsePids('many'), /^--pids: 'many' is not a number of processes; use e.g. 64/);
  says(() => parsePids('0'), /^--pids: '0' is not more than zero/);
  says(() => parsePids('-3'), /not more than zero/);
  says(() => parseDeviceRate('10MB/s'), /^--io-write-bps: '10MB\/s' is not DEV:RATE/);
  says(() => parseDeviceRate('/dev/nonexistent:1M'), /\/dev\/nonexistent does not exist/);
  says(() => parseDeviceRate('/dev/null:1M'), /\/dev\/null is not a block device/);
  says(() => parseDeviceRate('8:0:0'), /'0' is not more than zero/);
  says(() => limitsFromFlags({ memory: 'lots' }), /^--memory: 'lots' is not a size/);
});

units('the flags become limits in kernel units, and flags not given become no limit', () => {
  assert.equal(limitsFromFlags({ cpus: '0.5', cpuset: '0', memory: '64M', pids: '64', 'io-write-bps': ['8:0:1M'], 'io-read-bps': [] }), {
    cpus: 0.5,
    cpuset: '0',
    memory: 64 * MiB,
    pids: 64,
    ioWriteBps: [{ dev: '8:0', bytes: MiB }],
  });
  assert.equal(limitsFromFlags({}), {});
  const { flags, command } = parseArgs(['--memory', '64M', '--pids=64', '--io-read-bps', '8:0:2M', '--io-write-bps', '8:0:1M', '--', 'sh'], cgroupFlags);
  assert.equal(limitsFromFlags(flags), { memory: 64 * MiB, pids: 64, ioReadBps: [{ dev: '8:0', bytes: 2 * MiB }], ioWriteBps: [{ dev: '8:0', bytes: MiB }] });
  assert.equal(command, ['sh']);
});

units("the minimal device rules allow exactly step 04's /dev: its nodes, ptmx and the devpts terminals", () => {
  const nodes = Object.values(DEVICES).map(([major, minor]) => `c ${major}:${minor} rwm`);
  assert.equal([...MINIMAL_DEVICE_RULES].sort(), [...nodes, 'c 5:2 rwm', 'c 136:* rwm'].sort());
  assert.ok(Object.isFrozen(MINIMAL_DEVICE_RULES), 'a shared list no caller can change');
});

units('detection: statfs tells v1, v2 or hybrid, and each v1 controller is found where it is mounted', () => {
  const mode = cgroupMode();
  assert.is(tree.mode, mode);
  console.log(`  (this host: cgroup ${tree.mode}, limits in v${tree.version})`);
  if (tree.version === 2) {
    assert.is(tree.mode, 'v2');
    assert.equal(new Set(Object.values(tree.roots)), new Set(['/sys/fs/cgroup']));
    assert.is(tree.roots.devices, undefined, 'v2 has no devices controller');
    return;
  }
  assert.ok(tree.mode === 'v1' || tree.mode === 'hybrid');
  const v1 = cgroupMounts().filter(([, type]) => type === 'cgroup');
  for (const [controller, root] of Object.entries(tree.roots)) {
    assert.ok(v1.some(([dir, , options]) => dir === root && options.includes(controller)), `${controller} is mounted at ${root}`);
  }
  for (const [dir, , options] of v1) for (const c of ['cpu', 'memory', 'pids', 'devices']) if (options.includes(c)) assert.ok(tree.roots[c as 'cpu'], `${c} (mounted at ${dir}) was found`);
});

units.run();
