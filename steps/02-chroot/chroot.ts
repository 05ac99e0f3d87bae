// Step 02: lock a process in the cell with chroot(2) — and see why a cell
// with one wall is not a prison.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CleanupStack, withSignals } from '../../lib/cleanup.ts';
import { statusOf } from '../../lib/errors.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { repoPath } from '../../lib/paths.ts';
import { requireTools } from '../../lib/preflight.ts';
import { run, shellQuote } from '../../lib/sh.ts';
import { jailEnv } from '../../lib/spec.ts';

/** Runs argv inside rootfs with chroot; resolves to its exit status (128+signal when killed). */
export async function runChrooted(rootfs: string, argv: string[]): Promise<number> {
  requireTools('chroot');
  showCommand(shellQuote(['chroot', rootfs, ...argv]));
  const child = spawn('chroot', [rootfs, ...argv], { stdio: 'inherit', env: jailEnv() });
  // the terminal's Ctrl-C reaches the child too; we only wait for it
  return withSignals(
    () => {},
    () => new Promise((resolve) => child.on('close', (code, sig) => resolve(statusOf(code, sig)))),
  );
}

/** Output of a shell snippet run inside the chroot. */
async function inside(rootfs: string, script: string): Promise<string> {
  showCommand(shellQuote(['chroot', rootfs, '/bin/sh', '-c', script]));
  return run(['chroot', rootfs, '/bin/sh', '-c', script]);
}

/** What chroot leaves shared with the host: processes, hostname, network, mounts. */
export async function demonstrateWeaknesses(rootfs: string): Promise<void> {
  heading('What chroot does NOT isolate');
  await using cleanup = new CleanupStack();
  explain('1. Processes. Root in the chroot can mount /proc and see every process on the host:');
  cleanup.defer(`umount ${rootfs}/proc`, () => run(['umount', '-l', join(rootfs, 'proc')]));
  const ps = await inside(rootfs, 'mount -t proc proc /proc && ps -o pid,comm | head -8; echo "… $(ls -d /proc/[0-9]* | wc -l) processes in all"');
  console.log(indent(ps));
  explain('   …and that mount is in the HOST\'s mount table, not just the jail\'s:');
  showCommand(`findmnt ${join(rootfs, 'proc')}`);
  console.log(indent(await run(['findmnt', '-n', join(rootfs, 'proc')])));
  await cleanup.unwind();
  explain('2. The hostname is the host\'s (and root in here could change it for everyone):');
  console.log(indent(await inside(rootfs, 'hostname')));
  explain('3. The network is the host\'s: the same interfaces and addresses.');
  console.log(indent(await inside(rootfs, 'ip -o link show | cut -d: -f2')));
  explain('Steps 03 and 04 fix each of these with a namespace.');
}

/** Root inside a chroot walks out with chroot-inside-chroot. */
export async function demonstrateEscape(rootfs: string): Promise<number> {
  heading('Escaping a chroot');
  const dir = mkdtempSync('/tmp/baj-escape-');
  const marker = join(dir, 'marker');
  writeFileSync(marker, 'a file on the host, outside the rootfs\n');
  try {
    explain(`A marker file on the host: ${marker}. A root process locks itself into the rootfs`);
    explain('with chroot(2), then chroots into a subdirectory without chdir and climbs "..":');
    const escape = repoPath('steps/02-chroot/escape-demo.ts');
    showCommand(`node --import tsx ${escape} ${rootfs} ${marker}`);
    const out = await run([process.execPath, '--import', 'tsx', escape, rootfs, marker]);
    console.log(indent(out));
    explain('chroot is a change of view, not a wall. pivot_root in a mount namespace (step 04) is.');
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const indent = (text: string) => text.trimEnd().split('\n').map((l) => '    ' + l).join('\n');
