// GET /jails/ID/logs[?follow=1]: the jail's stdout and stderr are a plain
// file the shim's launcher writes to (the jail inherits it as fds 1 and 2),
// so the daemon needs no pipe to the jail and loses nothing while it is
// down. Following is `tail -f` by hand: read what is new, look again a
// moment later, and stop once the jail has exited and the file is read.
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { logPath, readState, shimAlive, viewOf } from './records.ts';

const POLL_MS = 100;

export async function sendLog(id: string, res: ServerResponse, follow: boolean): Promise<void> {
  let fd: number;
  try {
    fd = openSync(logPath(id), 'r');
  } catch {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    return void res.end();
  }
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', ...(follow ? {} : { 'content-length': fstatSync(fd).size }) });
  let gone = false;
  res.on('close', () => (gone = true));
  const buf = Buffer.alloc(64 * 1024);
  let offset = 0;
  const drain = (limit = Infinity) => {
    for (;;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, limit - offset), offset);
      if (n <= 0) return;
      offset += n;
      res.write(Buffer.from(buf.subarray(0, n)));
    }
  };
  try {
    if (!follow) {
      drain(fstatSync(fd).size); // exactly what content-length promised
      return;
    }
    for (;;) {
      // "ended" before the last read: nothing the jail wrote before exiting is missed
      const s = readState(id);
      const ended = !viewOf(id) || s?.status === 'exited' || (s !== undefined && !shimAlive(s));
      drain();
      if (ended || gone) return;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    closeSync(fd);
    res.end();
  }
}
