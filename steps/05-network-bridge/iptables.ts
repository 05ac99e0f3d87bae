// iptables rules with a name tag. Every rule this step adds carries
// `-m comment --comment baj…`: the kernel keeps the comment with the rule, so
// cleanup finds the rule again by its tag alone, even one that a killed run
// left behind. Adding checks first (-C), so a rule is never there twice.
import { showCommand } from '../../lib/output.ts';
import { run, shellQuote, succeeds } from '../../lib/sh.ts';
import { PREFIX } from '../../lib/state.ts';
import { cleanHint } from './ip.ts';

export interface Rule {
  table: 'filter' | 'nat' | 'raw';
  chain: string;
  match: string[];
  target: string[];
  /** Starts with baj, so cleanup finds the rule by its comment alone. */
  comment: string;
}

export async function iptables(...args: string[]): Promise<string> {
  showCommand(shellQuote(['iptables', ...args]));
  return run(['iptables', '-w', ...args], cleanHint);
}

const ruleArgs = (r: Rule): string[] => [...r.match, '-m', 'comment', '--comment', r.comment, ...r.target];
export const ruleExists = (r: Rule): Promise<boolean> => succeeds(['iptables', '-w', '-t', r.table, '-C', r.chain, ...ruleArgs(r)]);

/** Inserted at the top: a host firewall with a DROP policy (Docker sets one on FORWARD) must not shadow them. */
export async function addRule(rule: Rule): Promise<void> {
  if (!(await ruleExists(rule))) await iptables('-t', rule.table, '-I', rule.chain, ...ruleArgs(rule));
}

export async function deleteRule(rule: Rule): Promise<void> {
  while (await ruleExists(rule)) await iptables('-t', rule.table, '-D', rule.chain, ...ruleArgs(rule));
}

export interface TaggedRule {
  table: string;
  chain: string;
  /** The rule as iptables-save prints it, after `-A CHAIN`: what `-D CHAIN` takes to delete it. */
  args: string[];
  comment: string;
}

/** iptables-save quotes a comment with spaces: "baj x"; split a rule line the way a shell would. */
function splitRule(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[2] ?? m[1]!.replace(/\\(.)/g, '$1'));
}

/** Every rule in every table whose comment starts with baj. */
export async function taggedRules(): Promise<TaggedRule[]> {
  const found = [];
  let table = '';
  for (const line of (await run(['iptables-save'])).split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    if (!line.startsWith('-A ')) continue;
    const words = splitRule(line);
    const comment = words[words.indexOf('--comment') + 1] ?? '';
    if (words.includes('--comment') && comment.startsWith(PREFIX)) found.push({ table, chain: words[1]!, args: words.slice(2), comment });
  }
  return found;
}

export async function deleteTaggedRule(rule: TaggedRule): Promise<void> {
  await iptables('-t', rule.table, '-D', rule.chain, ...rule.args);
}
