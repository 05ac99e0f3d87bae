/** The directory the bundles are cached in (node_modules/.cache/build-a-jail). */
export const cacheDir: string;
/** A bundle's name: the step's directory and the entry, e.g. 04-pivot-root-init. */
export function bundleName(entry: string): string;
/** Returns the path of a bundled, ready-to-run copy of a TypeScript entry point (an ES module). */
export function bundled(entry: string): Promise<string>;
/** Node's arguments (after its own path) that start one of our scripts (an init, a helper, a shim): `flags`, then its CommonJS copy where it can have one, else its bundle. */
export function nodeArgs(entry: string, flags?: string[]): Promise<string[]>;
/** The environment for a Node child of ours that makes no TLS connection: without NODE_EXTRA_CA_CERTS, which every Node parses as it starts. */
export function nodeChildEnv(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
/** Runs an entry point in this process: its CommonJS script, from V8's code cache, where it can be one; else its module bundle. */
export function runEntry(entry: string): Promise<void>;
