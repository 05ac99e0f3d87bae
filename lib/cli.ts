// The command line of every step: flags before `--`, the jail's command after.
//   npm run step 4 -- --rootfs DIR --hostname hello -- sh -c 'echo hi'
// npm passes everything after its own `--` through untouched, so a step sees
// `--rootfs DIR --hostname hello -- sh -c …`.
import { JailError, runMain } from './errors.ts';
import { rootfsDir } from './state.ts';

export type FlagSpec =
  | { type: 'boolean'; help: string }
  | { type: 'string'; help: string; value: string; default?: string }
  | { type: 'list'; help: string; value: string };

export type FlagSpecs = Record<string, FlagSpec>;

type Parsed<S extends FlagSpecs> = {
  [K in keyof S]: S[K] extends { type: 'boolean' } ? boolean : S[K] extends { type: 'list' } ? string[] : string | undefined;
};

/** The flags every step that runs a jail understands. */
export const jailFlags = {
  rootfs: { type: 'string', value: 'DIR', help: 'the root filesystem to lock the command in', default: undefined },
  hostname: { type: 'string', value: 'NAME', help: 'the hostname inside the jail' },
} satisfies FlagSpecs;

export const defaultCommand = ['/bin/sh'];

export interface ParsedArgs<S extends FlagSpecs> {
  flags: Parsed<S>;
  /** Everything after `--`; empty when none was given. */
  command: string[];
}

export function parseArgs<S extends FlagSpecs>(argv: string[], specs: S): ParsedArgs<S> & { help: boolean } {
  const flags: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    flags[name] = spec.type === 'boolean' ? false : spec.type === 'list' ? [] : spec.default;
  }
  let help = false;
  let command: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      command = argv.slice(i + 1);
      break;
    }
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--')) {
      throw new JailError(`unexpected argument '${arg}'`, `put the jail's command after --, e.g. -- ${arg}`, 2);
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = specs[name];
    if (!spec) {
      throw new JailError(`unknown flag --${name}`, `the flags are: ${Object.keys(specs).map((n) => '--' + n).join(' ')} (see --help)`, 2);
    }
    if (spec.type === 'boolean') {
      if (eq !== -1) throw new JailError(`--${name} takes no value`, undefined, 2);
      flags[name] = true;
      continue;
    }
    let value: string | undefined = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || (eq === -1 && value.startsWith('--'))) {
      throw new JailError(`--${name} needs a value (${spec.value})`, undefined, 2);
    }
    if (spec.type === 'list') (flags[name] as string[]).push(value);
    else flags[name] = value;
  }
  return { flags: flags as Parsed<S>, command, help };
}

export function usage(title: string, synopsis: string, specs: FlagSpecs): string {
  const lines = [title, '', 'usage: ' + synopsis, '', 'flags:'];
  for (const [name, spec] of Object.entries(specs)) {
    const left = spec.type === 'boolean' ? `--${name}` : `--${name} ${spec.value}`;
    lines.push(`  ${left.padEnd(26)} ${spec.help}${spec.type === 'list' ? ' (repeatable)' : ''}`);
  }
  lines.push(`  ${'--help'.padEnd(26)} this text`);
  return lines.join('\n');
}

/** Hostnames follow RFC 1123: letters, digits and inner hyphens, 1-63 per label. */
export function checkHostname(name: string): string {
  const label = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
  if (name.length > 64 || !name.split('.').every((l) => label.test(l))) {
    throw new JailError(`'${name}' is not a valid hostname`, 'use letters, digits and hyphens, like hello or jail-1 (at most 64 characters)', 2);
  }
  return name;
}

export function rootfsOrDefault(rootfs: string | undefined): string {
  return rootfs ?? rootfsDir('busybox');
}

/**
 * A step's whole entry (its main.ts): parse the flags, answer --help, then
 * run `body`, whose number is the exit status; a JailError becomes one
 * sentence and a hint (runMain).
 */
export function stepEntry<S extends FlagSpecs>(title: string, synopsis: string, specs: S, body: (args: ParsedArgs<S>, argv: string[]) => Promise<number | void>): Promise<never> {
  return runMain(async () => {
    const argv = process.argv.slice(2);
    const args = parseArgs(argv, specs);
    if (args.help) {
      console.log(usage(title, synopsis, specs));
      return 0;
    }
    return body(args, argv);
  });
}
