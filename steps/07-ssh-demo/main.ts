// npm run step 7 -- [--net host|bridge] [--detach | --stop] [--listen ADDR] [limits…]
import { stepEntry } from '../../lib/cli.ts';
import { runSshDemo, sshDemoFlags } from './demo.ts';

await stepEntry('Step 07: the finale — a Debian jail running sshd on port 23322; log in with ssh.', 'npm run step 7 -- [--net host|bridge] [--detach | --stop] [--listen ADDR] [--memory SIZE] [--pids N] [--cpus N]', sshDemoFlags, async (args, argv) => {
  return runSshDemo(args.flags, args.command, { step: 7, argv });
});
