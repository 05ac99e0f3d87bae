// The English and Chinese editions of every lesson stay in step:
//   node --import tsx test/00-lessons.test.ts
// For each steps/NN-*/README.md (and the top README.md) with a README.zh-CN.md
// beside it: the same headings at each level, the same code blocks in the
// same order with the same commands and outputs (only comments may be
// translated), the same tables with the same number of rows, and a link from
// each edition to the other. Needs no root. Lessons without a Chinese edition
// yet are listed, not failed.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { repo } from './helpers.ts';

const EN = 'README.md';
const ZH = 'README.zh-CN.md';

export interface Heading {
  level: number;
  text: string;
  line: number;
}
export interface CodeBlock {
  info: string;
  lines: string[];
  line: number;
  /** the heading the block is under, for messages */
  under: string;
}
export interface Table {
  rows: number;
  line: number;
  under: string;
}
export interface Lesson {
  headings: Heading[];
  blocks: CodeBlock[];
  tables: Table[];
  links: string[];
}

/** Headings, fenced code blocks, tables and link targets of a Markdown text (headings and tables inside code are not). */
export function parseLesson(text: string): Lesson {
  const lesson: Lesson = { headings: [], blocks: [], tables: [], links: [] };
  const lines = text.split('\n');
  let under = '(top)';
  let block: CodeBlock | undefined;
  let fence = '';
  let table: Table | undefined;
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (block) {
      const close = line.match(/^\s*(`{3,}|~{3,})\s*$/);
      if (close && close[1]![0] === fence[0] && close[1]!.length >= fence.length) {
        lesson.blocks.push(block);
        block = undefined;
      } else {
        block.lines.push(line);
      }
      return;
    }
    const open = line.match(/^\s*(`{3,}|~{3,})\s*([^`\s]*)/);
    if (open) {
      table = undefined;
      fence = open[1]!;
      block = { info: open[2] ?? '', lines: [], line: i + 1, under };
      return;
    }
    const h = line.match(/^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/);
    if (h) {
      table = undefined;
      lesson.headings.push({ level: h[1]!.length, text: h[2]!, line: i + 1 });
      under = `${h[1]} ${h[2]}`;
      return;
    }
    if (/^\s*\|/.test(line)) {
      if (!table) lesson.tables.push((table = { rows: 0, line: i + 1, under }));
      table.rows++;
    } else {
      table = undefined;
    }
    for (const m of line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) lesson.links.push(m[1]!);
  });
  if (block) lesson.blocks.push(block); // an unclosed fence: compare what there is
  return lesson;
}

/**
 * One line of a code block as it must read in both editions: without its
 * comment and trailing whitespace. A comment starts at an unquoted `#` that
 * begins the line or follows a blank; in C-like blocks also at an unquoted
 * `//` (the pseudo-code of step 02). Quotes are tracked within the line only.
 */
export function stripComment(line: string, info = ''): string {
  const slashes = /^(c|cpp|go|golang|js|javascript|ts|typescript)$/i.test(info);
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
      continue;
    }
    if (c === '\\') {
      i++;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      continue;
    }
    const atWord = i === 0 || /\s/.test(line[i - 1]!);
    if (atWord && (c === '#' || (slashes && line.startsWith('//', i)))) return line.slice(0, i).trimEnd();
  }
  return line.trimEnd();
}

/** A block's lines with comments gone; lines that were only a comment are dropped (a translation may wrap them differently). */
export function codeLines(block: CodeBlock): string[] {
  const out: string[] = [];
  for (const line of block.lines) {
    const stripped = stripComment(line, block.info);
    if (stripped.trim() === '' && line.trim() !== '') continue;
    out.push(stripped);
  }
  return out;
}

const show = (s: string, max = 70) => JSON.stringify(s.length > max ? s.slice(0, max) + '…' : s);
const blockName = (b: CodeBlock, i: number) => `code block ${i + 1} (line ${b.line}, under "${b.under}", starting ${show(codeLines(b)[0] ?? '')})`;

/**
 * What differs between an English edition and its Chinese one, first
 * difference of each kind; [] if they are in step. `name` is the lesson's
 * directory, as messages should name it (steps/01-rootfs).
 */
export function compareEditions(en: string, zh: string, name: string): string[] {
  const a = parseLesson(en);
  const b = parseLesson(zh);
  const enFile = `${name}/${EN}`;
  const zhFile = `${name}/${ZH}`;
  const problems: string[] = [];

  // headings: the same count at each level, in the same order
  const count = (l: Lesson) => [1, 2, 3, 4, 5, 6].map((n) => l.headings.filter((h) => h.level === n).length);
  const ca = count(a);
  const cb = count(b);
  const n = Math.max(a.headings.length, b.headings.length);
  for (let i = 0; i < n; i++) {
    const ha = a.headings[i];
    const hb = b.headings[i];
    if (ha && hb && ha.level === hb.level) continue;
    const levels = ca.map((c, k) => (c === cb[k] ? '' : `level ${k + 1}: ${c} vs ${cb[k]}`)).filter(Boolean).join(', ');
    const describe = (h: Heading | undefined, file: string) => (h ? `${file}:${h.line} ${'#'.repeat(h.level)} ${h.text}` : `${file}: no heading ${i + 1}`);
    problems.push(`headings differ at heading ${i + 1}: ${describe(ha, enFile)} vs ${describe(hb, zhFile)}${levels ? ` (counts ${levels})` : ''}`);
    break;
  }

  // code blocks: the same, in the same order, comments aside
  for (let i = 0; i < Math.max(a.blocks.length, b.blocks.length); i++) {
    const ba = a.blocks[i];
    const bb = b.blocks[i];
    if (!ba || !bb) {
      const [has, hasnt, file] = ba ? [ba, enFile, zhFile] : [bb!, zhFile, enFile];
      problems.push(`${hasnt} has ${blockName(has, i)}; ${file} has only ${i} code blocks (${a.blocks.length} vs ${b.blocks.length})`);
      break;
    }
    if (ba.info !== bb.info) {
      problems.push(`${blockName(ba, i)} of ${enFile} is \`\`\`${ba.info}, in ${zhFile}:${bb.line} it is \`\`\`${bb.info}`);
      break;
    }
    const la = codeLines(ba);
    const lb = codeLines(bb);
    const j = la.findIndex((l, k) => l !== lb[k]);
    const at = j >= 0 ? j : la.length !== lb.length ? la.length : -1;
    if (at >= 0) {
      problems.push(`${blockName(ba, i)} of ${enFile} differs in ${zhFile}:${bb.line} at its line ${at + 1}: ${show(la[at] ?? '(end of block)')} vs ${show(lb[at] ?? '(end of block)')}`);
      break;
    }
  }

  // tables: as many, each with as many rows
  for (let i = 0; i < Math.max(a.tables.length, b.tables.length); i++) {
    const ta = a.tables[i];
    const tb = b.tables[i];
    if (ta && tb && ta.rows === tb.rows) continue;
    const describe = (t: Table | undefined, file: string) => (t ? `${file}:${t.line} (under "${t.under}") has ${t.rows} rows` : `${file} has no table ${i + 1}`);
    problems.push(`table ${i + 1} differs: ${describe(ta, enFile)}, ${describe(tb, zhFile)}`);
    break;
  }

  // each edition links to the other
  if (!a.links.some((l) => l === ZH || l === `./${ZH}`)) problems.push(`${enFile} has no link to its Chinese edition: add [中文](${ZH}) at the top`);
  if (!b.links.some((l) => l === EN || l === `./${EN}`)) problems.push(`${zhFile} has no link to its English edition: add [English](${EN}) at the top`);
  return problems;
}

/** Every lesson directory (relative to the repo), the top README first, and whether it has a Chinese edition. */
export function lessons(root = repo): { dir: string; hasZh: boolean }[] {
  const dirs = ['.', ...readdirSync(join(root, 'steps')).filter((d) => /^\d\d-/.test(d)).sort().map((d) => `steps/${d}`)];
  return dirs.filter((d) => existsSync(join(root, d, EN))).map((dir) => ({ dir, hasZh: existsSync(join(root, dir, ZH)) }));
}

const test = suite('lessons: the Chinese editions stay in step with the English ones');
const all = lessons();

for (const { dir } of all.filter((l) => l.hasZh)) {
  test(`${dir === '.' ? 'the top README' : dir}: ${ZH} matches ${EN} (headings, code blocks, tables, links)`, () => {
    const problems = compareEditions(readFileSync(join(repo, dir, EN), 'utf8'), readFileSync(join(repo, dir, ZH), 'utf8'), dir);
    assert.ok(problems.length === 0, problems.join('\n'));
  });
}

test('which lessons have no Chinese edition yet (listed, not failed)', () => {
  const missing = all.filter((l) => !l.hasZh).map((l) => join(l.dir, EN));
  const have = all.length - missing.length;
  if (missing.length) console.log(`  ${have} of ${all.length} lessons have a Chinese edition; still without one:\n${missing.map((m) => `    ${m}`).join('\n')}`);
  else console.log(`  all ${all.length} lessons have a Chinese edition`);
  assert.ok(all.length > 0, 'found no lesson at all');
});

// --- the comparison itself can fail: each kind of drift is caught and named ---

const EN_SAMPLE = `[中文](README.zh-CN.md)

# Step 99 — a sample

Some words.

## Run it

\`\`\`sh
sudo npm run step 99           # the tour
grep -c '#' /etc/passwd        # a quoted # is not a comment
\`\`\`

### Output

\`\`\`
▶ Hello
  $ ls /
\`\`\`

| what | median |
|---|---|
| a | 1 ms |

## Read

\`man 2 chroot\`.
`;

const ZH_SAMPLE = `[English](README.md)

# 第 99 步 — 示例

几句话。

## 运行

\`\`\`sh
sudo npm run step 99           # 导览
grep -c '#' /etc/passwd        # 引号里的 # 不是注释
\`\`\`

### 输出

\`\`\`
▶ Hello
  $ ls /
\`\`\`

| 内容 | 中位数 |
|---|---|
| a | 1 ms |

## 延伸阅读

\`man 2 chroot\`。
`;

const unit = suite('lessons: the comparison catches drift');

unit('two editions in step: no problem (translated headings, comments and cells)', () => {
  assert.equal(compareEditions(EN_SAMPLE, ZH_SAMPLE, 'steps/99-sample'), []);
});

unit('comments: an unquoted " #" or a line starting with # starts one; quotes and $# do not', () => {
  assert.is(stripComment('ls $R      # bin dev'), 'ls $R');
  assert.is(stripComment("grep -c '#' x   # count"), "grep -c '#' x");
  assert.is(stripComment('echo "a # b" # c'), 'echo "a # b"');
  assert.is(stripComment('echo $# ${#x}'), 'echo $# ${#x}');
  assert.is(stripComment('# a whole line'), '');
  assert.is(stripComment('chdir("..");   // 64 times', 'c'), 'chdir("..");');
  assert.is(stripComment('see http://x //y', 'sh'), 'see http://x //y');
  assert.equal(codeLines({ info: 'sh', lines: ['# only a comment', 'ls   ', '', 'pwd # here'], line: 1, under: '' }), ['ls', '', 'pwd']);
});

unit('a heading missing or at another level is named, with the file', () => {
  const dropped = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('### 输出\n', ''), 'steps/99-sample');
  assert.is(dropped.length, 1, dropped.join('\n'));
  assert.match(dropped[0]!, 'steps/99-sample/README.zh-CN.md');
  assert.match(dropped[0]!, '### Output');
  assert.match(dropped[0]!, 'level 3: 1 vs 0');
  const moved = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('### 输出', '## 输出'), 'steps/99-sample');
  assert.match(moved[0]!, /heading 3: .*### Output vs .*## 输出/);
});

unit('a changed command, a translated output or a dropped block is named with its block', () => {
  const cmd = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('sudo npm run step 99 ', 'npm run step 99      '), 'steps/99-sample');
  assert.is(cmd.length, 1, cmd.join('\n'));
  assert.match(cmd[0]!, /code block 1 .*under "## Run it".* at its line 1: "sudo npm run step 99" vs "npm run step 99"/);
  const out = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('▶ Hello', '▶ 你好'), 'steps/99-sample');
  assert.match(out[0]!, /code block 2 .*"▶ Hello" vs "▶ 你好"/);
  const extra = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('  $ ls /\n', '  $ ls /\n  $ pwd\n'), 'steps/99-sample');
  assert.match(extra[0]!, /code block 2 .*line 3: "\(end of block\)" vs " {2}\$ pwd"/);
  const gone = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace(/### 输出\n\n```\n[^`]*```\n/, '### 输出\n'), 'steps/99-sample');
  assert.match(gone[0]!, /README.zh-CN.md has only 1 code blocks \(2 vs 1\)/);
  const lang = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('```sh', '```bash'), 'steps/99-sample');
  assert.match(lang[0]!, /```sh, in .*```bash/);
});

unit('a table row too many, and a missing link back, are named', () => {
  const rows = compareEditions(EN_SAMPLE, ZH_SAMPLE.replace('| a | 1 ms |', '| a | 1 ms |\n| b | 2 ms |'), 'steps/99-sample');
  assert.match(rows[0]!, /table 1 differs: .*has 3 rows, .*README.zh-CN.md:\d+ \(under "### 输出"\) has 4 rows/);
  const noLink = compareEditions(EN_SAMPLE.replace('[中文](README.zh-CN.md)\n', ''), ZH_SAMPLE.replace('[English](README.md)', 'English'), 'steps/99-sample');
  assert.is(noLink.length, 2, noLink.join('\n'));
  assert.match(noLink[0]!, 'steps/99-sample/README.md has no link to its Chinese edition');
  assert.match(noLink[1]!, 'steps/99-sample/README.zh-CN.md has no link to its English edition');
});

unit('a "#" line inside a code block is not a heading', () => {
  const l = parseLesson('# Title\n\n```sh\n# a comment\nls\n```\n## Next\n');
  assert.equal(l.headings.map((h) => h.text), ['Title', 'Next']);
  assert.is(l.blocks.length, 1);
});

unit('a real lesson, broken in a copy, fails', () => {
  const pair = all.find((l) => l.hasZh);
  if (!pair) return; // no Chinese edition yet: the samples above stand in
  const en = readFileSync(join(repo, pair.dir, EN), 'utf8');
  const zh = readFileSync(join(repo, pair.dir, ZH), 'utf8');
  // append to the first command of the Chinese edition's first code block (before its comment)
  const lines = zh.split('\n');
  const at = parseLesson(zh).blocks[0]!.line; // the fence's line number: lines[at] is the block's first line
  const command = stripComment(lines[at]!);
  lines[at] = lines[at]!.replace(command, `${command} --oops`);
  const problems = compareEditions(en, lines.join('\n'), pair.dir);
  assert.ok(problems.some((p) => p.includes('code block 1') && p.includes('--oops')), problems.join('\n') || 'the broken copy passed');
  const noHeading = zh.replace(/^## .*\n/m, '');
  assert.ok(compareEditions(en, noHeading, pair.dir).some((p) => p.startsWith('headings differ')), 'a dropped heading passed');
});

test.run();
unit.run();
