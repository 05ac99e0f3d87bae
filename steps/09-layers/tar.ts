// Step 09: the tar format, which is what an image layer is on the wire. A
// tar is a list of 512-byte headers, each followed by the file's bytes
// padded to 512, and two zero blocks at the end. That is all: no index, no
// compression (gzip wraps the whole stream). We read and write it here, in
// a hundred lines, rather than through GNU tar, because a layer needs three
// things tar(1) will not do: turn overlayfs's whiteouts into OCI's `.wh.`
// files and back, refuse an entry that would land outside the layer (and
// name it), and write the same bytes for the same tree every time, so that
// a layer's sha256 names its content.
//   ustar (POSIX.1-1988)  name 100 bytes, numbers in octal: small files, short names
//   pax (POSIX.1-2001)    an extra 'x' entry of "LEN key=value\n" records before a
//                         header: long names, big numbers, xattrs (SCHILY.xattr.NAME)
//   GNU                   'L'/'K' pseudo-entries for long names, base-256 numbers:
//                         read here (GNU tar writes them), never written
import { closeSync, openSync, readSync } from 'node:fs';
import { JailError } from '../../lib/errors.ts';

export type EntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

/** One entry, as a layer needs it. Names are relative, without a trailing '/'. */
export interface TarHeader {
  name: string;
  type: EntryType;
  /** Permission bits with setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content that follow: files only. */
  size: number;
  /** Seconds since 1970. */
  mtime: number;
  /** A symlink's target, or the earlier entry a hard link names. */
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
}

export const BLOCK = 512;

const TYPE_FLAGS: Record<EntryType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };
const FLAG_TYPES: Record<string, EntryType> = { '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

/** Zeros that pad a file's bytes up to the next 512. */
export const padding = (size: number): Buffer => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** The end of an archive: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

// ---------------------------------------------------------------------------
// Writing

/** The largest number each octal field holds (digits, then a NUL). */
const octalMax = (digits: number): number => 8 ** digits - 1;

function writeOctal(block: Buffer, offset: number, digits: number, value: number): void {
  block.write(value.toString(8).padStart(digits, '0') + '\0', offset, 'latin1');
}

/** One pax record: "LEN key=value\n", LEN counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function ustarBlock(name: Buffer, type: string, h: Pick<TarHeader, 'mode' | 'uid' | 'gid' | 'mtime' | 'devmajor' | 'devminor'>, size: number, linkname: Buffer): Buffer {
  const block = Buffer.alloc(BLOCK);
  name.copy(block, 0, 0, 100);
  writeOctal(block, 100, 7, h.mode);
  writeOctal(block, 108, 7, h.uid);
  writeOctal(block, 116, 7, h.gid);
  writeOctal(block, 124, 11, size);
  writeOctal(block, 136, 11, h.mtime);
  block.write(type, 156, 'latin1');
  linkname.copy(block, 157, 0, 100);
  block.write('ustar\0' + '00', 257, 'latin1');
  // uname and gname stay empty: the names would be this host's /etc/passwd's, not the layer's
  writeOctal(block, 329, 7, h.devmajor);
  writeOctal(block, 337, 7, h.devminor);
  block.fill(' ', 148, 156); // the checksum is summed with its own field as spaces
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return block;
}

/**
 * The header block(s) of one entry. Deterministic: the same header always
 * gives the same bytes (a pax entry only when ustar cannot say it, with its
 * records sorted and a fixed name), so a layer's digest depends on its tree alone.
 */
export function encodeHeader(h: TarHeader): Buffer {
  const name = Buffer.from(h.type === 'dir' ? h.name + '/' : h.name);
  const linkname = Buffer.from(h.linkname);
  const size = h.type === 'file' ? h.size : 0;
  const pax: Buffer[] = [];
  if (name.length > 100) pax.push(paxRecord('path', name));
  if (linkname.length > 100) pax.push(paxRecord('linkpath', linkname));
  const fits = (v: number, digits: number) => Number.isInteger(v) && v >= 0 && v <= octalMax(digits);
  const fixed = { ...h };
  for (const [key, digits] of [['uid', 7], ['gid', 7], ['mtime', 11]] as const) {
    if (!fits(h[key], digits)) {
      pax.push(paxRecord(key, Buffer.from(String(h[key]))));
      fixed[key] = 0;
    }
  }
  if (!fits(size, 11)) pax.push(paxRecord('size', Buffer.from(String(size))));
  for (const key of [...h.xattrs.keys()].sort()) pax.push(paxRecord(`SCHILY.xattr.${key}`, h.xattrs.get(key)!));
  const header = ustarBlock(name, TYPE_FLAGS[h.type], fixed, fits(size, 11) ? size : 0, linkname);
  if (!pax.length) return header;
  const records = Buffer.concat(pax);
  const paxHeader = ustarBlock(Buffer.from('PaxHeader'), 'x', { mode: 0o644, uid: 0, gid: 0, mtime: 0, devmajor: 0, devminor: 0 }, records.length, Buffer.alloc(0));
  return Buffer.concat([paxHeader, records, padding(records.length), header]);
}

// ---------------------------------------------------------------------------
// Reading

const cString = (field: Buffer): Buffer => {
  const nul = field.indexOf(0);
  return nul === -1 ? field : field.subarray(0, nul);
};

/** Octal, or GNU's base-256 (high bit set) for numbers octal cannot hold. */
function readNumber(field: Buffer): number {
  if (field[0]! & 0x80) {
    let n = field[0]! & 0x7f;
    for (const byte of field.subarray(1)) n = n * 256 + byte;
    return n;
  }
  const text = cString(field).toString('latin1').trim();
  return text ? parseInt(text, 8) : 0;
}

/** pax records: "LEN key=value\n" … (values may be binary: xattrs). */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    const len = Number(data.subarray(at, space).toString('latin1'));
    if (space === -1 || !Number.isInteger(len) || len <= 0 || at + len > data.length) throw new JailError('a pax header in the archive is corrupt', undefined, 2);
    const record = data.subarray(space + 1, at + len - 1);
    const eq = record.indexOf(0x3d);
    records.set(record.subarray(0, eq).toString('utf8'), record.subarray(eq + 1));
    at += len;
  }
  return records;
}

/** A raw header block as found: type flag and fields, before pax and GNU long names apply. */
interface RawHeader {
  flag: string;
  name: Buffer;
  linkname: Buffer;
  size: number;
  fields: Omit<TarHeader, 'name' | 'linkname' | 'type' | 'xattrs' | 'size'>;
}

/** One header block; undefined for a zero block (the end). A bad checksum is refused. */
export function decodeBlock(block: Buffer): RawHeader | undefined {
  if (block.every((b) => b === 0)) return undefined;
  const stored = readNumber(block.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  if (sum !== stored) throw new JailError('the archive is corrupt or not a tar file (a header checksum is wrong)', undefined, 2);
  const magic = block.subarray(257, 263).toString('latin1');
  let name = cString(block.subarray(0, 100));
  // POSIX ustar keeps a long name's directories in 'prefix'; old GNU uses those bytes for times
  if (magic === 'ustar\0') {
    const prefix = cString(block.subarray(345, 500));
    if (prefix.length) name = Buffer.concat([prefix, Buffer.from('/'), name]);
  }
  return {
    flag: String.fromCharCode(block[156]!),
    name,
    linkname: cString(block.subarray(157, 257)),
    size: readNumber(block.subarray(124, 136)),
    fields: {
      mode: readNumber(block.subarray(100, 108)) & 0o7777,
      uid: readNumber(block.subarray(108, 116)),
      gid: readNumber(block.subarray(116, 124)),
      mtime: readNumber(block.subarray(136, 148)),
      devmajor: readNumber(block.subarray(329, 337)),
      devminor: readNumber(block.subarray(337, 345)),
    },
  };
}

/** What the meta entries before a header ('x', 'g', 'L', 'K') said about it. */
interface Pending {
  pax: Map<string, Buffer>;
  global: Map<string, Buffer>;
  longName?: Buffer;
  longLink?: Buffer;
}

/** A raw header plus what came before it, as one TarHeader. */
function completeHeader(raw: RawHeader, p: Pending): TarHeader {
  const type = FLAG_TYPES[raw.flag];
  if (!type) throw new JailError(`the archive has an entry of a kind a layer cannot hold (tar type '${raw.flag}': ${raw.name.toString('utf8')})`, undefined, 2);
  const records = new Map([...p.global, ...p.pax]);
  const text = (key: string) => records.get(key)?.toString('utf8');
  const num = (key: string, fallback: number) => (records.has(key) ? Math.floor(Number(text(key))) : fallback);
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of records) if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice('SCHILY.xattr.'.length), value);
  const name = text('path') ?? (p.longName ?? raw.name).toString('utf8');
  return {
    ...raw.fields,
    type,
    name: name.replace(/\/+$/, ''),
    linkname: text('linkpath') ?? (p.longLink ?? raw.linkname).toString('utf8'),
    size: type === 'file' ? num('size', raw.size) : 0,
    uid: num('uid', raw.fields.uid),
    gid: num('gid', raw.fields.gid),
    mtime: num('mtime', raw.fields.mtime),
    xattrs,
  };
}

/** Whether a raw header is a meta entry; if so, its data (read by the caller) goes into `p`. */
const isMeta = (flag: string): boolean => flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K';

function applyMeta(flag: string, data: Buffer, p: Pending): void {
  if (flag === 'x') p.pax = parsePax(data);
  else if (flag === 'g') for (const [k, v] of parsePax(data)) p.global.set(k, v);
  else if (flag === 'L') p.longName = cString(data);
  else p.longLink = cString(data);
}

export interface TarHandlers {
  /** A header; for a file, its bytes follow through data(), then entryEnd(). */
  entry(h: TarHeader): void;
  data(chunk: Buffer): void;
  entryEnd(h: TarHeader): void;
}

/**
 * A tar read as a stream: write() it chunks as they come (from gunzip, from
 * a file), and it calls the handlers in order. Synchronous on purpose: the
 * handler writes one file at a time, so nothing piles up in memory.
 */
export class TarReader {
  #buf: Buffer = Buffer.alloc(0);
  #pending: Pending = { pax: new Map(), global: new Map() };
  #current?: { raw: RawHeader; header?: TarHeader; left: number; meta: Buffer[] };
  #ended = false;

  constructor(private readonly handlers: TarHandlers) {}

  write(chunk: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      if (this.#ended) return;
      const cur = this.#current;
      if (cur) {
        if (cur.left > 0) {
          if (!this.#buf.length) return;
          const take = this.#buf.subarray(0, Math.min(cur.left, this.#buf.length));
          this.#buf = this.#buf.subarray(take.length);
          cur.left -= take.length;
          if (cur.header) this.handlers.data(take);
          else cur.meta.push(Buffer.from(take));
          if (cur.left > 0) return;
        }
        const pad = padding(cur.raw.size).length;
        if (this.#buf.length < pad) return;
        this.#buf = this.#buf.subarray(pad);
        this.#current = undefined;
        if (cur.header) this.handlers.entryEnd(cur.header);
        else applyMeta(cur.raw.flag, Buffer.concat(cur.meta), this.#pending);
        continue;
      }
      if (this.#buf.length < BLOCK) return;
      const raw = decodeBlock(this.#buf.subarray(0, BLOCK));
      this.#buf = this.#buf.subarray(BLOCK);
      if (!raw) {
        this.#ended = true; // the first zero block ends it; whatever follows is padding
        return;
      }
      if (isMeta(raw.flag)) {
        this.#current = { raw, left: raw.size, meta: [] };
        continue;
      }
      const header = completeHeader(raw, this.#pending);
      this.#pending = { pax: new Map(), global: this.#pending.global };
      // a hard link's size field may be set by some writers, yet no bytes follow it
      const size = header.type === 'file' ? header.size : 0;
      this.#current = { raw: { ...raw, size }, header, left: size, meta: [] };
      this.handlers.entry(header);
    }
  }

  /** The stream ended: it must have ended between entries. */
  end(): void {
    if (this.#current) throw new JailError(`the archive ends in the middle of ${this.#current.header?.name ?? 'a header'} (truncated?)`, undefined, 2);
  }
}

// ---------------------------------------------------------------------------
// A tar file on disk, read like a directory

export interface TarMember {
  header: TarHeader;
  /** Where its bytes start in the file. */
  offset: number;
}

/**
 * The members of an (uncompressed) tar file by name, read from the headers
 * alone: an OCI archive or a `docker save` can then be read blob by blob,
 * straight from the file, without unpacking it anywhere first.
 */
export function indexTarFile(path: string): Map<string, TarMember> {
  const members = new Map<string, TarMember>();
  const fd = openSync(path, 'r');
  try {
    const block = Buffer.alloc(BLOCK);
    let at = 0;
    let pending: Pending = { pax: new Map(), global: new Map() };
    for (;;) {
      if (readSync(fd, block, 0, BLOCK, at) < BLOCK) throw new JailError(`${path} ends in the middle of a header (truncated, or not a tar file)`, undefined, 2);
      const raw = decodeBlock(block);
      if (!raw) return members;
      at += BLOCK;
      if (isMeta(raw.flag)) {
        const data = Buffer.alloc(raw.size);
        readSync(fd, data, 0, raw.size, at);
        applyMeta(raw.flag, data, pending);
        at += raw.size + padding(raw.size).length;
        continue;
      }
      const header = completeHeader(raw, pending);
      pending = { pax: new Map(), global: pending.global };
      members.set(header.name.replace(/^(\.\/)+/, ''), { header, offset: at });
      at += header.size + padding(header.size).length;
    }
  } finally {
    closeSync(fd);
  }
}
