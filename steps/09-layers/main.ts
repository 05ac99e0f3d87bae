// npm run step 9 -- [--image NAME] [--name JAIL] [--keep] [step 05-08 flags] [-- CMD]
//                                        a locked jail whose root is an overlay of the image's layers (run.ts)
// npm run step 9 -- images               the images and their layers
//                   rmi NAME             remove an image (its layers once nothing uses them)
//                   commit JAIL NAME     a kept jail's upper as a new layer: a new image
//                   rm JAIL              remove a kept jail's dir
//                   export NAME --oci DIR              an OCI image layout (skopeo, podman read it)
//                   export NAME --bundle DIR [-- CMD]  an OCI runtime bundle (runc runs it)
//                   import FILE NAME     an OCI layout, oci-archive or docker save archive, as an image
import { stepEntry, jailFlags, type FlagSpecs } from '../../lib/cli.ts';
import { JailError } from '../../lib/errors.ts';
import { ok } from '../../lib/output.ts';
import { requireRoot } from '../../lib/preflight.ts';
import { cgroupFlags, limitsFromFlags } from '../06-cgroups/flags.ts';
import { hardenFlags, locksFromFlags } from '../08-hardening/jail.ts';
import { exportBundleCommand } from './bundle.ts';
import { commitCommand } from './commit.ts';
import { imagesCommand, rmiCommand } from './images.ts';
import { exportOciCommand } from './oci-export.ts';
import { importCommand } from './oci-import.ts';
import { removeJailDir } from './overlay.ts';
import { runFlags, runOnImage } from './run.ts';

const title = 'Step 09: layers — a jail whose root is an overlay of an image, and the images themselves.';
const synopsis = [
  'npm run step 9 -- [--image NAME] [--name JAIL] [--keep] [--net none|host|bridge] [limits…] [--privileged] [--cap-add CAP]… [-- CMD ARGS…]',
  '       npm run step 9 -- images | rmi NAME | commit JAIL NAME | rm JAIL | import FILE NAME',
  '       npm run step 9 -- export NAME --oci DIR | export NAME --bundle DIR [-- CMD ARGS…]',
].join('\n');

const exportFlags = {
  oci: { type: 'string', value: 'DIR', help: 'an OCI image layout in DIR (new or empty)' },
  bundle: { type: 'string', value: 'DIR', help: 'an OCI runtime bundle in DIR: rootfs/ and config.json, for runc' },
  hostname: jailFlags.hostname,
  ...cgroupFlags,
  ...hardenFlags,
} as const satisfies FlagSpecs;

/** The verbs: their words after the verb (the rest is flags and `-- CMD`). */
const VERBS: Record<string, { words: string[]; synopsis: string }> = {
  images: { words: [], synopsis: 'npm run step 9 -- images' },
  rmi: { words: ['NAME'], synopsis: 'npm run step 9 -- rmi NAME' },
  rm: { words: ['JAIL'], synopsis: 'npm run step 9 -- rm JAIL' },
  commit: { words: ['JAIL', 'NAME'], synopsis: 'npm run step 9 -- commit JAIL NAME' },
  import: { words: ['FILE', 'NAME'], synopsis: 'npm run step 9 -- import FILE NAME' },
  export: { words: ['NAME'], synopsis: 'npm run step 9 -- export NAME --oci DIR | export NAME --bundle DIR [-- CMD ARGS…]' },
};

const argv = process.argv.slice(2);
const found = argv[0] !== undefined ? VERBS[argv[0]] : undefined;
if (!found) await stepEntry(title, synopsis, runFlags, (args) => runOnImage(args.flags, args.command));

// a verb: its words come first, then flags; stepEntry parses what follows them
const verb = found!;
const name = argv[0]!;
const rest = argv.slice(1);
const firstFlag = rest.findIndex((a) => a.startsWith('-'));
const words = firstFlag === -1 ? rest : rest.slice(0, firstFlag);
process.argv = [...process.argv.slice(0, 2), ...rest.slice(words.length)];
const wantWords = (): string[] => {
  if (words.length !== verb.words.length) {
    throw new JailError(`${name} takes ${verb.words.length ? verb.words.join(' ') : 'no words'}${words.length ? `, not: ${words.join(' ')}` : ''}`, `usage: ${verb.synopsis}`, 2);
  }
  return words;
};
const noCommand = (command: string[]) => {
  if (command.length) throw new JailError(`${name} runs no command (got: ${command.join(' ')})`, `usage: ${verb.synopsis}`, 2);
};
const verbTitle = `Step 09: ${name}`;

if (name === 'export') {
  await stepEntry(verbTitle, verb.synopsis, exportFlags, async ({ flags, command }) => {
    requireRoot();
    const [image] = wantWords();
    if (!!flags.oci === !!flags.bundle) throw new JailError('export needs one of --oci DIR and --bundle DIR', `usage: ${verb.synopsis}`, 2);
    if (flags.oci) {
      noCommand(command);
      return exportOciCommand(image!, flags.oci);
    }
    return exportBundleCommand(image!, flags.bundle!, command, limitsFromFlags(flags), { hostname: flags.hostname, locks: locksFromFlags(flags) });
  });
}

await stepEntry(verbTitle, verb.synopsis, {}, async ({ command }) => {
  noCommand(command);
  const w = wantWords();
  if (name === 'images') return imagesCommand();
  requireRoot();
  if (name === 'rmi') return rmiCommand(w[0]!);
  if (name === 'commit') return commitCommand(w[0]!, w[1]!);
  if (name === 'import') return importCommand(w[0]!, w[1]!);
  if (name === 'rm') {
    ok(`removed jail ${w[0]}'s dir ${removeJailDir(w[0]!)}`);
    return 0;
  }
  throw new JailError(`unreachable: the verb ${name}`);
});
