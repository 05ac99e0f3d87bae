// What a process in a jail sees, checked by asking it: the host's kernel
// (uname -r inside = outside), itself as PID 1 under its god process, the
// hostname it was given — and, where the text is wrong, /dev. The text mounts
// devtmpfs on /dev; a devtmpfs mounted in a throwaway mount namespace of this
// check's own shows what that hands a jail (every host disk), beside step 04's
// minimal /dev. Nothing is opened: nodes are only listed.
import { hostname, release } from 'node:os';
import { JailError } from '../lib/errors.ts';
import { inJail, lesson, run, type Check, type Context, type Outcome } from './claims-common.ts';

/** Two lists of device nodes, character then block, one path a line, split by a line "--". */
const LIST_NODES = (dir: string) => `find ${dir} -xdev -type c; echo --; find ${dir} -xdev -type b`;

function parseNodes(out: string, dir: string): { chars: string[]; blocks: string[] } {
  const [c = '', b = ''] = out.split(/^--$/m);
  const names = (s: string) =>
    s
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((p) => p.slice(dir.length).replace(/^\//, ''));
  return { chars: names(c), blocks: names(b) };
}

/**
 * devtmpfs as the text mounts it ("udev", flags 0, no options: the host's /dev
 * is rw already, so the shared superblock is not changed), in a mount
 * namespace of its own that dies with the command, then made read-only for
 * this mount only (remount,bind,ro) before anything is listed.
 */
async function devtmpfsNodes(ctx: Context): Promise<{ chars: string[]; blocks: string[] }> {
  const dir = ctx.scratch('devtmpfs');
  const script = `mount -t devtmpfs udev "$1" && mount -o remount,bind,ro "$1" && { ${LIST_NODES('"$1"')}; }`;
  const r = await run(['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', dir]);
  if (r.status !== 0) throw new JailError(`could not mount devtmpfs in a throwaway mount namespace: ${r.stderr.trim()}`);
  return parseNodes(r.stdout, dir);
}

const ellipsis = (xs: string[], n: number) => (xs.length > n ? `${xs.slice(0, n).join(', ')}, …` : xs.join(', '));

export const sightChecks: Check[] = [
  {
    name: 'kernel',
    zh: '你在容器内用`uname -a`看到的内核版本和外面看到的是一样的',
    en: 'uname inside a container shows the same kernel version as outside',
    lesson: lesson('01-rootfs'),
    async run(ctx): Promise<Outcome> {
      const inside = (await inJail(ctx, ['uname', '-r'])).trim();
      const outside = release();
      return inside === outside
        ? { verdict: 'shown', figure: `uname -r: ${inside} in the jail (node bin/step.mjs 4 -- uname -r) and on the host` }
        : { verdict: 'wrong', figure: `uname -r: ${inside} in the jail, ${outside} on the host` };
    },
  },
  {
    name: 'pid1',
    zh: '它自己看到自己的PID是1，也就是上帝进程了',
    en: 'the process started by clone() sees itself as PID 1: the god process',
    lesson: lesson('04-pivot-root', 'What PID 1 does, in order'),
    async run(ctx): Promise<Outcome> {
      const out = await inJail(ctx, ['ps', '-o', 'pid,comm']);
      const procs = out
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .filter((f) => f.length >= 2)
        .map(([pid, comm]) => `${pid} ${comm}`);
      const first = procs.find((p) => p.startsWith('1 '));
      return {
        verdict: first === '1 node' ? 'shown' : 'wrong',
        figure: `ps -o pid,comm in the jail: ${procs.join(', ')} (node is step 04's init, the god process; the command is its child)`,
      };
    },
  },
  {
    name: 'hostname',
    zh: 'hostname已经显示为我们设定的`hello`了',
    en: 'the hostname shows the hello we set',
    lesson: lesson('03-namespaces', 'Each namespace alone'),
    async run(ctx): Promise<Outcome> {
      const inside = (await inJail(ctx, ['hostname'], ['--hostname', 'hello'])).trim();
      return {
        verdict: inside === 'hello' && hostname() !== 'hello' ? 'shown' : 'wrong',
        figure: `hostname: ${inside} in the jail (--hostname hello: a UTS namespace), ${hostname()} on the host`,
      };
    },
  },
  {
    name: 'devtmpfs',
    zh: 'syscall.Mount("udev", tmpMountPointDev, "devtmpfs", 0, "") //挂载dev，用来使用设备的',
    en: 'mount devtmpfs on the jail\'s /dev, "to use the devices"',
    lesson: lesson('04-pivot-root', 'Why not devtmpfs'),
    async run(ctx): Promise<Outcome> {
      const dev = await devtmpfsNodes(ctx);
      const jail = parseNodes(await inJail(ctx, ['sh', '-c', LIST_NODES('/dev')]), '/dev');
      const disks = dev.blocks.filter((b) => /^(vd|sd|nvme|xvd|hd|mmcblk)/.test(b)).sort();
      // the disks first, then the rest (loop, zram …)
      dev.blocks = [...disks, ...dev.blocks.filter((b) => !disks.includes(b)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))];
      return {
        verdict: 'corrected',
        figure:
          `devtmpfs: ${dev.chars.length + dev.blocks.length} device nodes, ${dev.blocks.length} of them block devices (${ellipsis(dev.blocks, 6)})` +
          `${disks.length ? `, the host's disk${disks.length > 1 ? 's' : ''} ${disks.join(', ')} among them` : ''}; ` +
          `step 04's /dev: ${jail.chars.length + jail.blocks.length} nodes (${jail.chars.join(', ')}), ${jail.blocks.length} block`,
        note: 'counted, never opened; the devtmpfs was mounted read-only in a mount namespace of its own',
      };
    },
  },
];
