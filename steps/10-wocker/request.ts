// A checked POST /jails (api.ts) as step 09's command line: the same words a
// learner would type after `npm run step 9 --`, parsed by step 09's own
// flags. The daemon is a thin layer over step 09.
// Its shape is what a jail's init must be started with (its namespaces and
// locks); everything else (image, hostname, command, limits, network) is in
// the spec that "go" brings. Step 10's pool starts inits ahead in the shape
// of the usual request, POOL_SHAPE, and hands them only to requests of it.
import { parseArgs } from '../../lib/cli.ts';
import { jailShape, runFlags, type RunFlags } from '../09-layers/run.ts';
import type { JailRequest } from './api.ts';

/** The jail's name on the host (its overlay dir, its veth): short, because interface names are. */
export const jailName = (id: string): string => `w${id}`;

/** POST /jails as `npm run step 9 -- …`. */
export function stepArgv(id: string, req: JailRequest): string[] {
  const argv = ['--image', req.image, '--hostname', req.hostname, '--net', req.net];
  for (const p of req.publish) argv.push('--publish', p);
  if (req.memory) argv.push('--memory', req.memory);
  if (req.cpus) argv.push('--cpus', req.cpus);
  if (req.pids) argv.push('--pids', req.pids);
  if (req.privileged) argv.push('--privileged');
  return [...argv, '--name', jailName(id), '--', ...req.cmd];
}

/** The request as step 09's parsed flags and command. */
export function stepFlags(id: string, req: JailRequest): { flags: RunFlags; command: string[] } {
  return parseArgs(stepArgv(id, req), runFlags);
}

/**
 * The usual request: locked (user namespace and all), a network namespace
 * of its own. Bridge or none, any image, hostname, command or limits: the
 * same shape.
 */
export const POOL_SHAPE: JailRequest = { image: 'busybox', hostname: 'jail', cmd: ['true'], net: 'none', publish: [], privileged: false };

/** The namespaces and locks an init for this request is started with, as one comparable string. */
export function shapeOf(req: JailRequest): string {
  const spec = jailShape(stepFlags('000000000000', req).flags);
  return JSON.stringify([spec.namespaces, spec.locks]);
}
