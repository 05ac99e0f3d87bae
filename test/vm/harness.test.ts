// Unit tests of the VM harness's pure parts (no VM is booted):
//   node --import tsx test/vm/harness.test.ts
// The serial console reader is where the exit status comes from, so its edge
// cases are pinned here: chunks split anywhere, \r\n from the tty, output
// without a final newline, and noise after the exit line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpio } from './initramfs.ts';
import { ConsoleReader, shq } from './vm.ts';

const NONCE = '0123456789abcdef';

function read(chunks: string[]): { out: string; markers: string[] } {
  let out = '';
  const markers: string[] = [];
  const r = new ConsoleReader(NONCE, (t) => (out += t), (kind, value) => markers.push(`${kind} ${value}`));
  chunks.forEach((c) => r.push(c));
  r.end();
  return { out, markers };
}

test('markers are found and removed, output passes through', () => {
  const { out, markers } = read([`${NONCE} ready 2.5\r\nhello\r\nworld\r\n${NONCE} exit 7\r\n[ 3.1] reboot: Power down\r\n`]);
  assert.is(out, 'hello\nworld\n');
  assert.equal(markers, ['ready 2.5', 'exit 7']);
});

test('a marker split across chunks, even inside \\r\\n', () => {
  const text = `a line\r\n${NONCE} exit 3\r\n`;
  for (let i = 1; i < text.length; i++) {
    const { out, markers } = read([text.slice(0, i), text.slice(i)]);
    assert.is(out, 'a line\n', `split at ${i}`);
    assert.equal(markers, ['exit 3'], `split at ${i}`);
  }
});

test('output without a final newline is kept before the exit marker', () => {
  const { out, markers } = read(['no newline', `${NONCE} exit 0\r\n`]);
  assert.is(out, 'no newline\n');
  assert.equal(markers, ['exit 0']);
});

test('a partial line is passed on at once unless it may start a marker', () => {
  let out = '';
  const r = new ConsoleReader(NONCE, (t) => (out += t), () => {});
  r.push('progress ...');
  assert.is(out, 'progress ...');
  r.push(` ${NONCE.slice(0, 5)}`);
  assert.is(out, 'progress ... ');
});

test('a traced echo of the marker (sh -x) is not a marker', () => {
  const { markers } = read([`+ echo '${NONCE} exit 0'\r\n`]);
  assert.equal(markers, []);
});

test('shq quotes for sh', () => {
  assert.is(shq('plain/word-1.ts'), 'plain/word-1.ts');
  assert.is(shq("it's"), `'it'\\''s'`);
  assert.is(shq('a b'), "'a b'");
});

test('cpio newc: headers, names and data padded to 4 bytes, a trailer', () => {
  const image = cpio([{ name: 'init', mode: 0o100755, data: Buffer.from('#!/bin/sh\n') }]);
  assert.is(image.subarray(0, 6).toString(), '070701');
  assert.is(image.length % 4, 0);
  assert.ok(image.includes(Buffer.from('TRAILER!!!\0')));
  assert.ok(image.includes(Buffer.from('#!/bin/sh\n')));
});

test.run();
