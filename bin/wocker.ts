// npm run wocker -- VERB …: the client of step 10's daemon (steps/10-wocker/client.ts).
//   daemon [--listen ADDR]   the daemon itself, in the foreground (= npm run step 10)
//   run [flags] [-d] IMAGE -- CMD…   ps   logs [-f] ID   exec ID -- CMD…   stop ID   rm [-f] ID   images   info
import { parseArgs } from '../lib/cli.ts';
import { JailError, runMain } from '../lib/errors.ts';
import { callJson, execVerb, formatPs, logsVerb, runVerb } from '../steps/10-wocker/client.ts';
import { daemonFlags, runDaemon } from '../steps/10-wocker/daemon.ts';
import type { JailView } from '../steps/10-wocker/records.ts';

const USAGE = `usage: npm run wocker -- VERB …
  daemon [--listen 127.0.0.1:PORT]       run the daemon in the foreground (sudo)
  run [--hostname H] [--memory M] [--cpus N] [--pids N] [--net none|host|bridge]
      [-p HOSTIP:HOSTPORT:PORT]… [--privileged] [-d] [--rm] IMAGE -- CMD…
  ps | logs [-f] ID | exec ID -- CMD… | stop ID | rm [-f] ID | images | info`;

const [verb, ...rest] = process.argv.slice(2);

/** ID and, optionally, one flag before it: `rm -f ID`, `logs -f ID`. */
function idWith(flag?: string): { id: string; flag: boolean } {
  const words = rest.filter((w) => w !== flag);
  if (words.length !== 1 || words[0]!.startsWith('-')) throw new JailError(`wocker ${verb} takes ${flag ? `[${flag}] ` : ''}ID`, USAGE, 2);
  return { id: words[0]!, flag: !!flag && rest.includes(flag) };
}

await runMain(async () => {
  switch (verb) {
    case 'daemon': {
      const { flags } = parseArgs(rest, daemonFlags);
      return runDaemon(flags.listen);
    }
    case 'run':
      return runVerb(rest);
    case 'ps':
      process.stdout.write(formatPs(await callJson<JailView[]>('GET', '/jails')));
      return 0;
    case 'logs': {
      const { id, flag } = idWith('-f');
      return logsVerb(id, flag);
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      const id = rest[0];
      if (!id || (dash !== 1 && rest.length > 1)) throw new JailError('wocker exec takes ID -- CMD…', USAGE, 2);
      return execVerb(id, dash === -1 ? [] : rest.slice(dash + 1));
    }
    case 'stop': {
      const view = await callJson<JailView>('POST', `/jails/${idWith().id}/stop`);
      console.log(`${view.id} ${view.state}${view.exitCode !== null ? ` (${view.exitCode})` : ''}`);
      return 0;
    }
    case 'rm': {
      const { id, flag } = idWith('-f');
      await callJson('DELETE', `/jails/${id}${flag ? '?force=1' : ''}`);
      console.log(id);
      return 0;
    }
    case 'images': {
      const images = await callJson<{ name: string; layers: number; bytes: number; made: boolean }[]>('GET', '/images');
      for (const i of images) console.log(`${i.name.padEnd(24)} ${i.made ? `${i.layers} layer${i.layers === 1 ? '' : 's'}, ${Math.round(i.bytes / 2 ** 20)}M` : 'built on first use'}`);
      return 0;
    }
    case 'info': {
      const i = await callJson<{ pid: number; jails: { running: number; total: number }; pool: { size: number; ready: number; starting: number } }>('GET', '/info');
      console.log(`daemon: pid ${i.pid}\njails: ${i.jails.running} running, ${i.jails.total} in all\npool: ${i.pool.ready} of ${i.pool.size} slots ready${i.pool.starting ? `, ${i.pool.starting} starting` : ''}${i.pool.size ? '' : ' (WOCKER_POOL=0)'}`);
      return 0;
    }
    case undefined:
    case '--help':
    case '-h':
      console.log(USAGE);
      return verb ? 0 : 2;
    default:
      throw new JailError(`wocker: unknown verb ${verb}`, USAGE, 2);
  }
});
