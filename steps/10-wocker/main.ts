// npm run step 10 [-- --listen 127.0.0.1:PORT]: the wocker daemon, in the
// foreground (daemon.ts). Talk to it with `npm run wocker -- …` or curl
// --unix-socket. Ctrl-C stops the daemon, not the jails: each is owned by
// its shim, and the next daemon finds them again on disk.
import { stepEntry } from '../../lib/cli.ts';
import { daemonFlags, runDaemon } from './daemon.ts';

const title = "Step 10: wocker — the HTTP service that makes jails, the text's wocker.go.";
const synopsis = 'npm run step 10 [-- --listen 127.0.0.1:PORT]';

await stepEntry(title, synopsis, daemonFlags, ({ flags }) => runDaemon(flags.listen));
