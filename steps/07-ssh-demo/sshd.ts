// Step 07: the lesson's finale — a Debian jail running sshd on port 23322,
// logged into with a key. This file prepares sshd's pieces and the client
// side; root.ts the jail's root, demo.ts starts it with every piece of steps 01-06.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, showCommand } from '../../lib/output.ts';
import { requireTools } from '../../lib/preflight.ts';
import { run } from '../../lib/sh.ts';
import { ensureDir, jailHome, rootfsDir } from '../../lib/state.ts';
import { buildDebianRootfs } from '../01-rootfs/rootfs.ts';
import { mkdirsLikeLower, type DemoRoot } from './root.ts';

export const SSH_PORT = 23322;
const sshDir = (): string => join(jailHome(), 'ssh');
export const clientKey = (): string => join(sshDir(), 'id_ed25519');
export const knownHosts = (): string => join(sshDir(), 'known_hosts');

/** The lesson's start script: start sshd, then a shell — or, detached, just stay alive. */
export const START_SCRIPT = `#!/bin/sh
# Run by the jail's PID 1 (the god process) as its one child.
# The host key is made here, at every start (the jail's top is new each time), so no two jails share one.
# One ed25519 key, the only one sshd is given (HostKey): milliseconds, where ssh-keygen -A's RSA key takes most of a second.
[ -e /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p /run/sshd && chmod 0755 /run/sshd
service ssh start
if [ -t 0 ]; then exec /bin/bash -l; fi
exec sleep infinity
`;

/** Our drop-in: Debian's sshd_config includes sshd_config.d/*.conf first, so these win. */
export function sshdConfig(listen: string): string {
  return [
    `Port ${SSH_PORT}`,
    `ListenAddress ${listen}`,
    'HostKey /etc/ssh/ssh_host_ed25519_key',
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    // PAM would want an audit login uid and a full session stack; a key is all we need
    'UsePAM no',
    '',
  ].join('\n');
}

/** The client's key pair: made once, kept in the workshop's state dir, private half 0600. */
export async function ensureClientKey(): Promise<string> {
  requireTools('ssh-keygen', 'ssh');
  const key = clientKey();
  if (!existsSync(key)) {
    ensureDir(sshDir(), 0o700);
    showCommand(`ssh-keygen -t ed25519 -N '' -f ${key}`);
    await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'build-a-jail', '-f', key]);
  }
  chmodSync(key, 0o600);
  return key;
}

/** The lower: step 01's Debian rootfs (built on first use), or --rootfs, which must have sshd. */
export async function sshLower(rootfs: string | undefined): Promise<string> {
  const lower = rootfs ?? rootfsDir('debian');
  if (!existsSync(join(lower, 'usr/sbin/sshd'))) {
    if (rootfs || existsSync(join(lower, 'bin'))) throw new JailError(`${lower} has no /usr/sbin/sshd`, rootfs ? 'pass --rootfs with a Debian tree that has openssh-server' : 'rebuild it: sudo npm run step 1 -- --debian');
    await buildDebianRootfs(lower);
  }
  return lower;
}

/** sshd's pieces, written into the jail's private top (the lower is never written). */
export async function prepareSshUpper(r: DemoRoot, listen: string): Promise<void> {
  const key = await ensureClientKey();
  heading('Preparing sshd inside the jail (in its top, not in the Debian tree)');
  const root = mkdirsLikeLower(r, 'root');
  mkdirSync(join(root, '.ssh'), { mode: 0o700 });
  chmodSync(join(root, '.ssh'), 0o700); // sshd refuses keys in a group- or world-writable dir
  writeFileSync(join(root, '.ssh/authorized_keys'), readFileSync(`${key}.pub`), { mode: 0o600 });
  showCommand(`cp ${key}.pub ${root}/.ssh/authorized_keys`);
  writeFileSync(join(mkdirsLikeLower(r, 'etc/ssh/sshd_config.d'), 'build-a-jail.conf'), sshdConfig(listen));
  explain(`sshd: port ${SSH_PORT}, listening on ${listen}, key login only (no passwords)`);
  writeFileSync(join(root, 'start_container.sh'), START_SCRIPT, { mode: 0o755 });
  showCommand(`cat ${root}/start_container.sh   # service ssh start, then a shell`);
}

/** Once sshd has started: trust exactly the host key this jail made (in its upper). */
export function writeKnownHosts(upper: string, host = '127.0.0.1'): void {
  const pub = readFileSync(join(upper, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
  writeFileSync(knownHosts(), `[${host}]:${SSH_PORT} ${pub}\n`);
}

/** The ssh command a learner pastes. */
export function sshCommand(extra: string[] = [], host = '127.0.0.1'): string[] {
  return ['ssh', '-i', clientKey(), '-o', `UserKnownHostsFile=${knownHosts()}`, '-o', 'BatchMode=yes', '-p', String(SSH_PORT), ...extra, `root@${host}`];
}

/** sshd's banner: something that speaks SSH answered, not merely a port that accepted. */
export function sshBanner(host = '127.0.0.1', port = SSH_PORT, timeoutMs = 1000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (v: string | undefined) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(timeoutMs, () => done(undefined));
    sock.on('data', (d) => done(String(d).startsWith('SSH-') ? String(d).trim() : undefined));
    sock.on('error', () => done(undefined));
    sock.on('close', () => done(undefined)); // e.g. a proxy that accepted, then found nobody behind it
  });
}

/** Ready means a real login works: the key is accepted and a command runs. */
export function loginWorks(host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const [ssh, ...args] = sshCommand(['-o', 'ConnectTimeout=2'], host);
    const c = spawn(ssh!, [...args, 'true'], { stdio: 'ignore' });
    c.on('close', (code) => resolve(code === 0));
    c.on('error', () => resolve(false));
  });
}
