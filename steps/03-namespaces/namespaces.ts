// Step 03: catching the process. The lesson's whole container is one call:
//   clone(fn, stack, CLONE_NEWUTS|CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUSER)
// Node cannot clone(): the call copies only the calling thread, and Node is
// many threads. (Go cannot either; the lesson sets SysProcAttr.Cloneflags and
// lets the runtime fork+exec.) So we ask util-linux `unshare --fork` to make
// the call and start our init in the new namespaces.
import type { Namespace } from '../../lib/spec.ts';
import type { IdRange } from './idrange.ts';

export interface NamespaceInfo {
  flag: string;
  option: string;
  isolates: string;
}

export const NAMESPACES: Record<Namespace, NamespaceInfo> = {
  uts: { flag: 'CLONE_NEWUTS', option: '--uts', isolates: 'the hostname and domain name' },
  pid: { flag: 'CLONE_NEWPID', option: '--pid', isolates: 'process IDs: the first process inside is PID 1' },
  mount: { flag: 'CLONE_NEWNS', option: '--mount', isolates: 'the mount table' },
  net: { flag: 'CLONE_NEWNET', option: '--net', isolates: 'interfaces, addresses, routes, ports, iptables' },
  ipc: { flag: 'CLONE_NEWIPC', option: '--ipc', isolates: 'SysV message queues, semaphores, shared memory' },
  user: { flag: 'CLONE_NEWUSER', option: '--user', isolates: 'user and group IDs: root inside, nobody special outside' },
};

/** The order of the lesson's clone() call. */
export const ALL_NAMESPACES: Namespace[] = ['uts', 'pid', 'mount', 'net', 'ipc', 'user'];

export const cloneFlags = (ns: Namespace[]): string => ns.map((n) => NAMESPACES[n].flag).join('|') || '0';

/** util-linux's spelling of the same clone() call. --fork: a new PID namespace applies to children, not to the caller. */
export function unshareArgs(ns: Namespace[]): string[] {
  // --keep-caps: the init is exec'd before its user namespace has ID maps;
  // without it, that exec would drop every capability
  const keepCaps = ns.includes('user') ? ['--keep-caps'] : [];
  return ['unshare', '--fork', '--kill-child=SIGKILL', ...ns.map((n) => NAMESPACES[n].option), ...keepCaps];
}

/**
 * One line of uid_map or gid_map, "ID-inside ID-outside count", written by
 * the launcher from outside (/proc/PID/uid_map). Root on the host maps the
 * jail's 0…65535 to a range that is nobody's (idrange.ts); a normal user can
 * map only itself.
 */
export function idMap(hostId: number, isRoot: boolean, range: IdRange): string {
  return isRoot ? `0 ${range.base} ${range.count}\n` : `0 ${hostId} 1\n`;
}
