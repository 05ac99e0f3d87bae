// The test VM's kernel: Debian's own linux-image package, fetched with
// `apt-get download` and unpacked with `dpkg-deb -x` into a cache dir. It is
// never installed: the host's /boot, its bootloader and its own
// /lib/modules stay untouched, so the harness can run on any Debian host.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { $, run } from '../../lib/sh.ts';
import { isAlive, jailCache } from '../../lib/state.ts';

export interface Kernel {
  /** The Debian package, e.g. linux-image-6.1.0-56-amd64. */
  pkg: string;
  /** What `uname -r` says inside: the directory name under lib/modules. */
  release: string;
  vmlinuz: string;
  /**
   * The uncompressed kernel, booted through its PVH entry point: under
   * emulation, unpacking the xz'd vmlinuz costs about 3 s of every boot.
   * Undefined when it could not be extracted (then vmlinuz is booted).
   */
  vmlinux: string | undefined;
  /** lib/modules/RELEASE of the unpacked package, with modules.dep made by depmod. */
  modules: string;
}

/** $JAIL_CACHE/vm: one unpacked kernel per package name, and the initramfs images. */
export const vmCache = (): string => join(jailCache(), 'vm');

const KERNEL_DIR = /^linux-image-[\w.+-]+$/;

/** The kernel to boot: fetched once, then taken from the cache, also offline. */
export async function kernel(log: (line: string) => void): Promise<Kernel> {
  const cache = vmCache();
  mkdirSync(cache, { recursive: true });
  removeStaleFetches(cache);
  const pkg = process.env.JAIL_VM_KERNEL_PACKAGE || (await currentKernelPackage(cache));
  const dir = join(cache, pkg);
  if (!existsSync(join(dir, '.complete'))) {
    log(`fetching Debian's kernel ${pkg} (once; cached in ${cache})`);
    try {
      await fetchKernel(pkg, dir, log);
    } catch (err) {
      // A newer kernel that cannot be fetched (offline, stale package lists)
      // should not stop a run when an older one is at hand.
      const fallback = cachedKernels(cache)[0];
      if (!fallback || process.env.JAIL_VM_KERNEL_PACKAGE) throw err;
      log(`${(err as Error).message}; booting the cached ${fallback} instead`);
      return describe(fallback, join(cache, fallback));
    }
    removeOtherKernels(cache, pkg);
  }
  return describe(pkg, dir);
}

/**
 * The package that Debian's linux-image-amd64 meta-package points to today.
 * When apt cannot say (no package lists, no network), an already cached
 * kernel will do: the harness must work offline once it has run.
 */
async function currentKernelPackage(cache: string): Promise<string> {
  try {
    const out = await run(['apt-cache', 'depends', 'linux-image-amd64']);
    const pkg = out.match(/Depends:\s+(linux-image-\S+-amd64)\s*$/m)?.[1];
    if (pkg) return pkg;
  } catch {}
  const cached = cachedKernels(cache)[0];
  if (cached) return cached;
  throw new JailError(
    "cannot find Debian's kernel package (apt-cache depends linux-image-amd64 names none)",
    'this harness boots the kernel of a Debian host: run apt-get update first, or set JAIL_VM_KERNEL_PACKAGE=linux-image-…-amd64',
  );
}

function cachedKernels(cache: string): string[] {
  return readdirSync(cache)
    .filter((name) => KERNEL_DIR.test(name) && existsSync(join(cache, name, '.complete')))
    .sort((a, b) => statSync(join(cache, b)).mtimeMs - statSync(join(cache, a)).mtimeMs);
}

/**
 * Downloads and unpacks into a private .fetch-PID dir, then renames it into
 * place: a run that is killed half-way leaves no half-unpacked kernel that a
 * later run would trust.
 */
async function fetchKernel(pkg: string, dir: string, log: (line: string) => void): Promise<void> {
  const work = join(vmCache(), `.fetch-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work);
  const removeWork = () => rmSync(work, { recursive: true, force: true });
  process.once('exit', removeWork); // also when a signal ends the run mid-download
  try {
    await download(pkg, work);
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new JailError(`apt-get download ${pkg} produced no .deb`);
    const root = join(work, 'root');
    await run(['dpkg-deb', '-x', join(work, deb), root], 'install dpkg (it unpacks the kernel package)');
    const release = onlyEntry(join(root, 'lib/modules'));
    // The package ships no modules.dep (its postinst makes one): make it here.
    await run(['depmod', '-b', root, release], 'install kmod (depmod resolves module dependencies)');
    extractVmlinux(join(root, 'boot', `vmlinuz-${release}`), join(root, 'boot', `vmlinux-${release}`), log);
    writeFileSync(join(root, '.complete'), `${pkg}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(root, dir);
  } finally {
    removeWork();
    process.off('exit', removeWork);
  }
}

/** `apt-get download` writes the .deb into its working directory. */
async function download(pkg: string, dir: string): Promise<void> {
  // The sandbox user _apt may not write into root's cache dir; we are root anyway.
  const out = await $({ cwd: dir })`apt-get download -q -o APT::Sandbox::User=root ${pkg}`.nothrow();
  if (out.exitCode !== 0) {
    throw new JailError(`apt-get download ${pkg} failed: ${out.stderr.trim().split('\n').slice(-2).join(' / ')}`, 'run apt-get update; the VM boots the kernel of a Debian host (bookworm)');
  }
}

function describe(pkg: string, dir: string): Kernel {
  const release = onlyEntry(join(dir, 'lib/modules'));
  const vmlinuz = join(dir, 'boot', `vmlinuz-${release}`);
  if (!existsSync(vmlinuz)) throw new JailError(`the cached kernel in ${dir} has no boot/vmlinuz-${release}`, `remove ${dir} and run again`);
  const vmlinux = join(dir, 'boot', `vmlinux-${release}`);
  return { pkg, release, vmlinuz, vmlinux: existsSync(vmlinux) ? vmlinux : undefined, modules: join(dir, 'lib/modules', release) };
}

/**
 * A bzImage is a small decompressor plus the real kernel, an ELF file,
 * compressed (xz on Debian 12). Cut at the xz magic and unpack that stream; keep
 * the result only if QEMU can boot it directly (it has the PVH entry note).
 */
function extractVmlinux(vmlinuz: string, vmlinux: string, log: (line: string) => void): void {
  const image = readFileSync(vmlinuz);
  const start = image.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (start !== -1) {
    // --single-stream: the bzImage has more bytes after the stream (its size
    // field). Not zx: its output is text, and this is a binary.
    const out = spawnSync('xz', ['-dc', '--single-stream'], { input: image.subarray(start), maxBuffer: 1 << 30 });
    if (out.status === 0 && hasPvhNote(out.stdout)) return writeFileSync(vmlinux, out.stdout);
  }
  log(`cannot unpack ${vmlinuz} for a direct (PVH) boot; booting it compressed, about 3 s slower`);
}

/** ELF64 PT_NOTE segments: a note named "Xen" of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) is the PVH entry. */
export function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) return false;
  const PT_NOTE = 4;
  const XEN_ELFNOTE_PHYS32_ENTRY = 18;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  for (let i = 0; i < elf.readUInt16LE(56); i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== PT_NOTE) continue;
    let at = Number(elf.readBigUInt64LE(ph + 8));
    const end = at + Number(elf.readBigUInt64LE(ph + 32));
    while (at + 12 <= end) {
      const [namesz, descsz, type] = [elf.readUInt32LE(at), elf.readUInt32LE(at + 4), elf.readUInt32LE(at + 8)];
      const name = elf.toString('latin1', at + 12, at + 12 + namesz).replace(/\0+$/, '');
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

const align4 = (n: number): number => (n + 3) & ~3;

function onlyEntry(dir: string): string {
  const entries = readdirSync(dir);
  if (entries.length !== 1) throw new JailError(`expected one kernel release in ${dir}, found: ${entries.join(' ') || 'none'}`);
  return entries[0]!;
}

/** A newer package replaces the old one: each unpacked kernel is about 400 MB. */
function removeOtherKernels(cache: string, keep: string): void {
  for (const name of readdirSync(cache)) {
    if (KERNEL_DIR.test(name) && name !== keep) rmSync(join(cache, name), { recursive: true, force: true });
  }
}

/** A .fetch-PID dir whose process is gone was left by a run that was killed. */
function removeStaleFetches(cache: string): void {
  for (const name of readdirSync(cache)) {
    const pid = Number(name.match(/^\.(?:fetch|initramfs)-(\d+)/)?.[1]);
    if (pid && !isAlive(pid)) rmSync(join(cache, name), { recursive: true, force: true });
  }
}


// ---------------------------------------------------------------------------
// Modules: which .ko files the initramfs must carry, in the order to load them.

/** modules.dep: "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko …", each line a module and all it needs. */
export function moduleDeps(modulesDir: string): Map<string, { path: string; deps: string[] }> {
  const byName = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [path, rest] = line.split(':');
    if (!path || rest === undefined) continue;
    byName.set(moduleName(path), { path, deps: rest.trim().split(/\s+/).filter(Boolean).map(moduleName) });
  }
  return byName;
}

/** kernel/net/9p/9pnet_virtio.ko -> 9pnet_virtio (modprobe treats - and _ alike). */
const moduleName = (path: string): string => path.replace(/^.*\//, '').replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');

/** modules.softdep: "softdep libcrc32c pre: crc32c", what a module uses without linking to it. */
function softDeps(modulesDir: string): Map<string, { pre: string[]; post: string[] }> {
  const byName = new Map<string, { pre: string[]; post: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.softdep'), 'utf8').split('\n')) {
    const m = line.match(/^softdep\s+(\S+)\s+(.*)$/);
    if (!m) continue;
    const entry = byName.get(moduleName(m[1]!)) ?? { pre: [], post: [] };
    let list = entry.pre;
    for (const word of m[2]!.split(/\s+/)) {
      if (word === 'pre:' || word === 'post:') list = word === 'pre:' ? entry.pre : entry.post;
      else if (word) list.push(word);
    }
    byName.set(moduleName(m[1]!), entry);
  }
  return byName;
}

/** modules.alias: "alias crc32c crc32c_generic"; a name may stand for several modules. */
function aliases(modulesDir: string): Map<string, string[]> {
  const byAlias = new Map<string, string[]>();
  for (const line of readFileSync(join(modulesDir, 'modules.alias'), 'utf8').split('\n')) {
    const m = line.match(/^alias\s+(\S+)\s+(\S+)$/);
    if (m) byAlias.set(m[1]!, [...(byAlias.get(m[1]!) ?? []), moduleName(m[2]!)]);
  }
  return byAlias;
}

export interface ModuleToLoad {
  /** Relative to the modules dir, e.g. kernel/fs/9p/9p.ko. */
  path: string;
  /**
   * A soft dependency may fail to load (crc32c_intel on a CPU without
   * SSE4.2) when another module provides the same thing.
   */
  optional: boolean;
}

/**
 * The modules to insmod, each after everything it needs (modules.dep) and
 * after what it asks for softly (modules.softdep), as modprobe would.
 * Modules built into the kernel are skipped, not an error.
 */
export function loadOrder(modulesDir: string, wanted: string[]): ModuleToLoad[] {
  const deps = moduleDeps(modulesDir);
  const soft = softDeps(modulesDir);
  const alias = aliases(modulesDir);
  const builtin = readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').map(moduleName);
  const order: ModuleToLoad[] = [];
  const seen = new Set<string>();
  const visitSoft = (name: string) => (deps.has(moduleName(name)) ? [moduleName(name)] : (alias.get(name) ?? [])).forEach((m) => visit(m, true));
  const visit = (name: string, optional: boolean) => {
    const key = moduleName(name);
    if (seen.has(key)) return;
    seen.add(key);
    const mod = deps.get(key);
    if (!mod) {
      if (builtin.includes(key)) return;
      throw new JailError(`the VM's kernel has no module ${name}`, `check the module lists in test/vm/initramfs.ts against ${modulesDir}/modules.dep`);
    }
    soft.get(key)?.pre.forEach(visitSoft);
    for (const dep of [...mod.deps].reverse()) visit(dep, optional);
    order.push({ path: mod.path, optional });
    soft.get(key)?.post.forEach(visitSoft);
  };
  wanted.forEach((name) => visit(name, false));
  return order;
}
