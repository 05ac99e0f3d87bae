// Step 09: a layer is a directory tree that records one change to the image
// below it. On disk it is in overlayfs's own form, so that it can be a
// lowerdir as it is; on the wire (an OCI image) it is a tar, in OCI's form.
// The two spell "deleted" and "replaced" differently:
//
//                     overlayfs (a layer dir, an upper)       OCI layer tar
//   NAME was deleted  NAME: a character device 0/0            .wh.NAME, an empty file
//   DIR was replaced  DIR with xattr trusted.overlay.opaque=y DIR/.wh..wh..opq
//                     (user.overlay.opaque=y under `userxattr`)
//
// layerTar() writes a layer dir as an OCI tar; extractLayer() writes an OCI
// tar back into a dir: in overlay form (import), or applied, with every
// whiteout carried out (a bundle's flat rootfs). An archive comes from
// anyone, so extraction is where the trust ends: see resolveInLayer.
import { createHash } from 'node:crypto';
import {
  chmodSync, closeSync, constants, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, readlinkSync,
  readSync, rmSync, symlinkSync, writeSync, type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { getXattr, listXattrs, makedev, mknod, S_IFCHR, setXattr } from '../../lib/libc.ts';
import { encodeHeader, END_OF_ARCHIVE, padding, TarReader, type TarHeader } from './tar.ts';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

/** overlayfs's whiteout: a character device with device number 0/0. */
export const isWhiteout = (st: Stats): boolean => st.isCharacterDevice() && st.rdev === 0;

/**
 * overlayfs keeps its marks in trusted.overlay.* when the host's root mounts
 * it, and in user.overlay.* when it is mounted with `userxattr` (by root in
 * a user namespace, who may not touch trusted.*). A layer dir carries the
 * opaque mark in both, so that it is the same lowerdir under either mount.
 */
export const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'] as const;
export const isOverlayXattr = (name: string): boolean => name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');

export const isOpaque = (dir: string): boolean => OPAQUE_XATTRS.some((x) => getXattr(dir, x)?.toString() === 'y');

export function markOpaque(dir: string): void {
  for (const x of OPAQUE_XATTRS) setXattr(dir, x, 'y');
}

/** overlayfs's own bookkeeping (trusted.overlay.*, user.overlay.*) is never part of a layer's content. */
const contentXattrs = (path: string): Map<string, Buffer> =>
  new Map(listXattrs(path).filter((n) => !isOverlayXattr(n)).map((n) => [n, getXattr(path, n) ?? Buffer.alloc(0)]));

// ---------------------------------------------------------------------------
// A layer dir as an OCI tar

const CHUNK = 1 << 20;

/**
 * The layer dir as an OCI layer tar, in chunks. The same tree gives the same
 * bytes every time: entries in sorted order (a directory, its opaque marker,
 * then its children by name), numeric owners and no user names, whole-second
 * mtimes, and nothing of the host (no atime, no inode numbers). The file
 * times are kept, not zeroed: they are part of what the layer says (make
 * and rsync read them), and the same tree still gives the same digest.
 */
export async function* layerTar(dir: string): AsyncGenerator<Buffer> {
  const seen = new Map<string, string>(); // dev:ino -> the first name, for hard links
  function* walk(rel: string): Generator<Buffer> {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const full = join(dir, path);
      const st = lstatSync(full);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), size: 0, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map<string, Buffer>() };
      if (isWhiteout(st)) {
        // each whiteout stands alone, even where overlayfs shares one inode among them
        yield encodeHeader({ ...base, name: join(rel, WHITEOUT_PREFIX + name), type: 'file' });
        continue;
      }
      const xattrs = contentXattrs(full);
      const key = `${st.dev}:${st.ino}`;
      if (!st.isDirectory() && st.nlink > 1) {
        const first = seen.get(key);
        if (first) {
          yield encodeHeader({ ...base, name: path, type: 'hardlink', linkname: first });
          continue;
        }
        seen.set(key, path);
      }
      if (st.isDirectory()) {
        yield encodeHeader({ ...base, name: path, type: 'dir', xattrs });
        // first in the dir, as the OCI spec asks: it hides only what lower layers had
        if (isOpaque(full)) yield encodeHeader({ ...base, name: `${path}/${OPAQUE_MARKER}`, type: 'file' });
        yield* walk(path);
      } else if (st.isSymbolicLink()) {
        yield encodeHeader({ ...base, name: path, type: 'symlink', linkname: readlinkSync(full), xattrs });
      } else if (st.isFile()) {
        yield encodeHeader({ ...base, name: path, type: 'file', size: st.size, xattrs });
        yield* fileChunks(full, st.size);
        yield padding(st.size);
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const [devmajor, devminor] = majorMinor(st.rdev);
        yield encodeHeader({ ...base, name: path, type: st.isCharacterDevice() ? 'char' : 'block', devmajor, devminor, xattrs });
      } else if (st.isFIFO()) {
        yield encodeHeader({ ...base, name: path, type: 'fifo', xattrs });
      } // sockets: tar has no type for them, and they mean nothing without their process
    }
  }
  yield* walk('');
  yield END_OF_ARCHIVE;
}

/** Exactly `size` bytes (a file that changes while we read it must not break the archive). */
function* fileChunks(path: string, size: number): Generator<Buffer> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let left = size;
    while (left > 0) {
      const buf = Buffer.alloc(Math.min(CHUNK, left));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) {
        yield Buffer.alloc(left); // it shrank: zeros keep the header's size true
        return;
      }
      left -= n;
      yield buf.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

/** glibc's major()/minor() of a dev_t (12+20 bits of major, 8+24 of minor, interleaved). */
function majorMinor(rdev: number): [number, number] {
  const r = BigInt(rdev);
  return [Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & 0xfffff000n)), Number((r & 0xffn) | ((r >> 12n) & 0xffffff00n))];
}

/** A layer's diff_id: the sha256 of its uncompressed tar, as OCI's config lists it. */
export async function layerDiffId(dir: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of layerTar(dir)) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
}

// ---------------------------------------------------------------------------
// An OCI tar into a dir

/** overlay: keep whiteouts as overlayfs spells them (a layer dir). applied: carry them out (a flat rootfs). */
export type LayerForm = 'overlay' | 'applied';

export interface ExtractOptions {
  form: LayerForm;
  /** Added to every owner: a bundle's rootfs for a user namespace is owned by the jail's ID range. */
  shift?: { uid: number; gid: number };
  /** Called once per entry that was skipped, with the reason. */
  onSkip?: (name: string, why: string) => void;
}

export interface Extracted {
  /** sha256 of the tar as it came in: what the image's config must list as its diff_id. */
  diffId: string;
  entries: number;
}

/** A hostile name may hold terminal escapes: show control characters as \\xNN. */
const shown = (name: string): string => name.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

const refuse = (entry: string, why: string): JailError =>
  new JailError(`refused: the archive's entry '${shown(entry)}' ${why}; nothing was imported`, 'an image layer never needs this: the archive is broken or hostile', 2);

/**
 * The directory an entry's name lands in, inside `root`, or a refusal.
 * A name must be relative and free of `..`; each directory on the way is
 * looked at with lstat, and a symlink there (one an earlier entry made) is
 * followed only while it stays inside the layer: a relative target that
 * does not climb out. An absolute target is the host's path when we write
 * (the jail's only after pivot_root), so it is refused: this is the
 * `evil -> /etc` then `evil/passwd` trick of hostile archives. Missing
 * directories are made, as tar does, when `create` is set.
 */
export function resolveInLayer(root: string, name: string, create: boolean): { parent: string; leaf: string } {
  if (name.includes('\0')) throw refuse(name, 'has a NUL byte in its name');
  if (name.startsWith('/')) throw refuse(name, 'is an absolute path');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw refuse(name, "climbs out with '..'");
  if (!parts.length) return { parent: root, leaf: '' };
  const leaf = parts.pop()!;
  let done: string[] = [];
  let todo = parts;
  for (let hops = 0; todo.length; ) {
    const next = todo[0]!;
    const here = join(root, ...done, next);
    let st: Stats | undefined;
    try {
      st = lstatSync(here);
    } catch {}
    if (!st) {
      if (!create) throw refuse(name, `names ${shown([...done, next].join('/'))}, which no earlier entry made`);
      mkdirSync(here, { mode: 0o755 });
    } else if (st.isSymbolicLink()) {
      const target = readlinkSync(here);
      const via = `goes through the symlink ${shown([...done, next].join('/'))} (-> ${shown(target)})`;
      if (++hops > 40) throw refuse(name, `${via}: too many levels of symlinks`);
      if (target.startsWith('/')) throw refuse(name, `${via}, which points outside the layer`);
      const resolved = [...done];
      for (const p of target.split('/')) {
        if (p === '..') {
          if (!resolved.length) throw refuse(name, `${via}, which points outside the layer`);
          resolved.pop();
        } else if (p && p !== '.') resolved.push(p);
      }
      done = [];
      todo = [...resolved, ...todo.slice(1)];
      continue;
    } else if (!st.isDirectory()) {
      throw refuse(name, `needs ${shown([...done, next].join('/'))} to be a directory, and it is not`);
    }
    done.push(next);
    todo = todo.slice(1);
  }
  return { parent: join(root, ...done), leaf };
}

/** Makes room for a new entry: whatever an earlier entry put there goes (a dir stays for a dir). */
function clearFor(path: string, keepDir: boolean): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (keepDir && st.isDirectory()) return;
  rmSync(path, { recursive: true, force: true });
}

/**
 * Extracts one layer tar (the chunks of its uncompressed stream) into
 * `dest`, which the caller made empty and owns: nothing else writes there
 * while we do. Owners are numeric (the names would be looked up in the
 * host's /etc/passwd, as GNU tar does, and be wrong). Device nodes other
 * than whiteouts are skipped: the jail's /dev is a tmpfs made at start
 * (step 04), so an image never needs one, and one elsewhere would be a door
 * to the host's hardware. trusted.* and user.overlay.* xattrs from an
 * archive are skipped too: they would steer overlayfs itself (redirects,
 * metacopy, opaque marks that the tar did not say).
 */
export async function extractLayer(chunks: AsyncIterable<Buffer>, dest: string, opts: ExtractOptions): Promise<Extracted> {
  const hash = createHash('sha256');
  const shift = opts.shift ?? { uid: 0, gid: 0 };
  const dirTimes: [string, number][] = [];
  const made = new Set<string>(); // paths this layer wrote: an opaque marker hides only the others
  let fd: number | undefined;
  let fdPath = '';
  let entries = 0;

  const setOwner = (path: string, h: TarHeader) => lchownSync(path, h.uid + shift.uid, h.gid + shift.gid);
  const setXattrs = (path: string, h: TarHeader) => {
    for (const [key, value] of h.xattrs) {
      if (key.startsWith('trusted.') || isOverlayXattr(key)) opts.onSkip?.(shown(h.name), `its xattr ${shown(key)} (trusted.* and user.overlay.* are overlayfs's and the host's, never an image's)`);
      else setXattr(path, key, value);
    }
  };
  const relOf = (path: string) => (path === dest ? '' : path.slice(dest.length + 1));
  const whiteout = (parent: string, name: string, h: TarHeader) => {
    const path = join(parent, name);
    clearFor(path, false);
    if (opts.form === 'applied') return; // deleted: gone from the flat tree
    mknod(path, S_IFCHR, makedev(0, 0));
    setOwner(path, h);
    chmodSync(path, h.mode);
    lutimesSync(path, h.mtime, h.mtime);
    made.add(relOf(path));
  };

  const reader = new TarReader({
    entry(h) {
      entries++;
      const { parent, leaf } = resolveInLayer(dest, h.name, true);
      if (!leaf) return; // './': the layer's own root, which we made
      const path = join(parent, leaf);
      const rel = relOf(path);
      if (leaf === OPAQUE_MARKER) {
        if (opts.form === 'overlay') markOpaque(parent);
        else for (const child of readdirSync(parent)) if (!made.has(relOf(join(parent, child)))) rmSync(join(parent, child), { recursive: true, force: true });
        return;
      }
      if (leaf.startsWith(WHITEOUT_PREFIX)) {
        const target = leaf.slice(WHITEOUT_PREFIX.length);
        // '.wh.' and '.wh...' would delete the directory itself, or the one above it
        if (target === '' || target === '.' || target === '..') throw refuse(h.name, 'is a whiteout of no file');
        // AUFS's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to do with overlayfs
        if (target.startsWith(WHITEOUT_PREFIX)) return opts.onSkip?.(shown(h.name), "AUFS's bookkeeping, which overlayfs has no use for");
        return whiteout(parent, target, h);
      }
      if (h.type === 'char' && h.devmajor === 0 && h.devminor === 0) return whiteout(parent, leaf, h); // already in overlay's spelling
      made.add(rel);
      switch (h.type) {
        case 'dir':
          clearFor(path, true);
          try {
            mkdirSync(path, { mode: 0o700 });
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          }
          setOwner(path, h);
          chmodSync(path, h.mode);
          setXattrs(path, h);
          dirTimes.push([path, h.mtime]);
          return;
        case 'file':
          clearFor(path, false);
          // O_EXCL|O_NOFOLLOW: never through a link, never into something that is already there
          fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
          fdPath = path;
          return;
        case 'symlink':
          clearFor(path, false);
          symlinkSync(h.linkname, path); // its target is not checked: a link may point anywhere; writing through it may not
          lchownSync(path, h.uid + shift.uid, h.gid + shift.gid);
          setXattrs(path, h);
          lutimesSync(path, h.mtime, h.mtime);
          return;
        case 'hardlink': {
          const t = resolveInLayer(dest, h.linkname, false);
          const target = join(t.parent, t.leaf);
          let st: Stats | undefined;
          try {
            st = lstatSync(target);
          } catch {}
          if (!t.leaf || !st || st.isDirectory()) throw refuse(h.name, `is a hard link to '${shown(h.linkname)}', which is not a file an earlier entry made`);
          clearFor(path, false);
          linkSync(target, path);
          return;
        }
        case 'fifo':
          clearFor(path, false);
          mknod(path, constants.S_IFIFO | 0o600, 0n);
          setOwner(path, h);
          chmodSync(path, h.mode);
          lutimesSync(path, h.mtime, h.mtime);
          return;
        case 'char':
        case 'block':
          made.delete(rel);
          opts.onSkip?.(shown(h.name), `a ${h.type === 'char' ? 'character' : 'block'} device ${h.devmajor}:${h.devminor}: a jail's /dev is made at its start, an image's nodes would only be doors to the host's hardware`);
          return;
      }
    },
    data(chunk) {
      if (fd === undefined) return; // the bytes of an entry we did not write out (a whiteout with content, say)
      for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at);
    },
    entryEnd(h) {
      if (h.type !== 'file' || fd === undefined) return;
      const path = fdPath;
      // chown first: it clears setuid and setgid, which the chmod after it sets again
      fchownSync(fd, h.uid + shift.uid, h.gid + shift.gid);
      fchmodSync(fd, h.mode);
      setXattrs(path, h);
      futimesSync(fd, h.mtime, h.mtime);
      closeSync(fd);
      fd = undefined;
    },
  });
  try {
    for await (const chunk of chunks) {
      hash.update(chunk);
      reader.write(chunk);
    }
    reader.end();
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  // a directory's mtime changes with every entry written into it: set them last, deepest first
  for (const [path, mtime] of dirTimes.reverse()) lutimesSync(path, mtime, mtime);
  return { diffId: `sha256:${hash.digest('hex')}`, entries };
}
