// npm run step 7 -- [--net host|bridge] [--detach | --stop] [--listen ADDR] [limits…]
import { parseArgs, usage } from '../../lib/cli.ts';
import { runMain } from '../../lib/errors.ts';
import { runSshDemo, sshDemoFlags } from './demo.ts';

await runMain(async () => {
  const argv = process.argv.slice(2);
  const args = parseArgs(argv, sshDemoFlags);
  if (args.help) {
    console.log(usage('Step 07: the finale — a Debian jail running sshd on port 23322; log in with ssh.', 'npm run step 7 -- [--net host|bridge] [--detach | --stop] [--listen ADDR] [--memory SIZE] [--pids N] [--cpus N]', sshDemoFlags));
    return 0;
  }
  return runSshDemo(args.flags, args.command, { step: 7, argv });
});
