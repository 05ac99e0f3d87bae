// Step 09's image tests, their home and their tools: a JAIL_HOME of the
// file's own under /var/tmp (made at import, removed after the file), the
// suite that checks the host after every test, and the helpers that prove
// nothing was made, describe a tree, make a kept jail's upper as overlayfs
// would, or craft a hostile layout and tar by hand.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import { JailError } from '../lib/errors.ts';
import { getXattr, listXattrs, makedev, mknod, S_IFCHR, setXattr } from '../lib/libc.ts';
import { jailHome, rootfsDir } from '../lib/state.ts';
import { buildBusyboxRootfs } from '../steps/01-rootfs/rootfs.ts';
import { jailPaths, writeJailState, type JailState } from '../steps/09-layers/store.ts';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarHeader } from '../steps/09-layers/tar.ts';
import { assertHostUnchanged, hostState, isRoot, rootSuite, type HostState } from './helpers.ts';

/**
 * JAIL_HOME for the file (jailHome() reads the variable on every call), and
 * its scratch dir; 0755, since a user namespace's root walks through it to a
 * bundle's rootfs.
 */
export function imagesHome(prefix: string): string {
  const home = isRoot ? mkdtempSync(`/var/tmp/${prefix}`) : '/nonexistent';
  if (isRoot) chmodSync(home, 0o755);
  process.env.JAIL_HOME = home;
  process.env.JAIL_QUIET = '1';
  return home;
}
export const scratch = (name: string) => join(jailHome(), 'scratch', name);

/** The busybox rootfs built, the host the same after every test, the home removed after the file. */
export function imagesSuite(name: string): Test {
  const test = rootSuite(name);
  let before: HostState;
  test.before(async () => {
    if (!isRoot) return;
    mkdirSync(join(jailHome(), 'scratch'));
    await buildBusyboxRootfs(rootfsDir('busybox'));
  });
  test.before.each(() => {
    before = hostState();
  });
  test.after.each(async () => {
    await assertHostUnchanged(before);
  });
  test.after(() => {
    if (isRoot) rmSync(jailHome(), { recursive: true, force: true });
  });
  return test;
}

/** Runs `fn` and expects one JailError with exit status 2 whose message matches. */
export async function refused(fn: () => unknown, pattern: RegExp): Promise<JailError> {
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof JailError)) throw err;
    assert.match(err.message, pattern);
    assert.is(err.exitCode, 2, `exit status of: ${err.message}`);
    return err;
  }
  assert.unreachable(`not refused: expected ${pattern}`);
  throw new Error('unreachable');
}

/** Every path under a dir (the store, an export dir): to prove that nothing was made. */
export function everything(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries.sort()) {
      const p = join(d, e);
      out.push(p);
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}
export const storeState = () => everything(join(jailHome(), 'images')).filter((p) => !p.endsWith('/.lock'));

/** A tree as text: every entry's type, mode, owner, mtime, size, content, link, device number and xattrs. */
export function treeOf(root: string): string[] {
  return everything(root).map((p) => {
    const st = lstatSync(p);
    const rel = p.slice(root.length + 1);
    const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? `l->${readlinkSync(p)}` : st.isFile() ? `f:${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}:n${st.nlink}` : st.isCharacterDevice() ? `c:${st.rdev}` : st.isFIFO() ? 'p' : '?';
    const xattrs = listXattrs(p).map((x) => `${x}=${getXattr(p, x)!.toString('hex')}`).join(',');
    return `${rel} ${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${Math.floor(st.mtimeMs / 1000)} ${st.isFile() ? st.size : ''} ${xattrs}`;
  });
}

/** A PID that was alive a moment ago and is not now. */
export function deadPid(): number {
  const r = spawnSync('/bin/true');
  return r.pid!;
}

export const BASE_USR_SBIN = () => readdirSync(join(rootfsDir('busybox'), 'usr/sbin'));

/**
 * A kept jail's upper, as overlayfs would have left it: a new file (with an
 * xattr and a hard link), bin/vi deleted (a whiteout), /usr/sbin removed
 * and made again (opaque) with one file in it, and /mnt made again under a
 * `userxattr` mount (opaque in user.overlay.*).
 */
export function makeKeptJail(name: string, launcher: Pick<JailState, 'launcherPid' | 'launcherStart'>): void {
  const { upper, work } = jailPaths(name);
  mkdirSync(join(upper, 'etc'), { recursive: true });
  mkdirSync(work);
  writeFileSync(join(upper, 'etc/motd'), 'made in the jail\n');
  setXattr(join(upper, 'etc/motd'), 'user.baj', 'kept');
  linkSync(join(upper, 'etc/motd'), join(upper, 'etc/motd.again'));
  mkdirSync(join(upper, 'bin'));
  mknod(join(upper, 'bin/vi'), S_IFCHR | 0o644, makedev(0, 0));
  mkdirSync(join(upper, 'usr/sbin'), { recursive: true });
  setXattr(join(upper, 'usr/sbin'), 'trusted.overlay.opaque', 'y');
  setXattr(join(upper, 'usr/sbin'), 'trusted.overlay.origin', Buffer.from([0, 1, 2])); // overlayfs's bookkeeping: not content
  writeFileSync(join(upper, 'usr/sbin/only-me'), '#!/bin/sh\necho only me\n', { mode: 0o755 });
  // a jail with a user namespace mounts its overlay with userxattr: its marks are in user.overlay.*
  mkdirSync(join(upper, 'mnt'));
  setXattr(join(upper, 'mnt'), 'user.overlay.opaque', 'y');
  writeFileSync(join(upper, 'mnt/note'), 'mounted here\n');
  writeJailState({ name, image: 'busybox', ...launcher, kept: true });
}

/** An OCI layout by hand, around layer tars we craft: for the hostile archives. */
export function handMadeLayout(dir: string, layers: Buffer[]): void {
  mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
  const put = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const blobs = layers.map((t) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...put(gzipSync(t)) }));
  const diffIds = layers.map((t) => `sha256:${createHash('sha256').update(t).digest('hex')}`);
  const config = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: blobs })));
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] }));
}

/** A tar of hand-written entries. */
export function craftTar(entries: (Partial<TarHeader> & { name: string; body?: string })[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const h: TarHeader = { type: 'file', mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: 1_700_000_000, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(), ...e };
    parts.push(encodeHeader(h));
    if (h.type === 'file') parts.push(body, padding(body.length));
  }
  return Buffer.concat([...parts, END_OF_ARCHIVE]);
}
