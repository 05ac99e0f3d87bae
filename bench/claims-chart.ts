// Draws the start-up claim's medians as a small hand-written SVG (docs/startup.svg):
// one horizontal bar each, on a log scale, so that a few milliseconds (unshare)
// and several seconds (a VM under software emulation) both show.
import type { Bar } from './claims-common.ts';
import { fmtMs } from './claims-common.ts';

const COLOURS: Record<Bar['kind'], string> = { jail: '#d9480f', tool: '#868e96', vm: '#1971c2' };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** "1 ms", "10 ms", "100 ms", "1 s", "10 s" */
const tickLabel = (ms: number): string => (ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`);

export function startupSvg(bars: Bar[], title: string, caption: string[]): string {
  const W = 800;
  const labelW = 230;
  const x0 = labelW + 10;
  const x1 = W - 70;
  const rowH = 30;
  const top = 58 + caption.length * 16;
  const lo = 10 ** Math.floor(Math.log10(Math.min(...bars.map((b) => b.ms)) / 1.5));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...bars.map((b) => b.ms)) * 1.2));
  const x = (ms: number) => x0 + ((Math.log10(ms) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (x1 - x0);
  const bottom = top + bars.length * rowH + 6;
  const H = bottom + 40;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="16" y="28" font-size="16" font-weight="bold" fill="#212529">${esc(title)}</text>`,
    ...caption.map((line, i) => `<text x="16" y="${50 + i * 16}" font-size="12" fill="#495057">${esc(line)}</text>`),
  ];
  // decade grid lines and their labels
  for (let t = lo; t <= hi * 1.0001; t *= 10) {
    out.push(`<line x1="${x(t).toFixed(1)}" y1="${top - 4}" x2="${x(t).toFixed(1)}" y2="${bottom}" stroke="#dee2e6" stroke-width="1"/>`);
    out.push(`<text x="${x(t).toFixed(1)}" y="${bottom + 16}" text-anchor="middle" fill="#495057">${tickLabel(Math.round(t * 1000) / 1000)}</text>`);
  }
  out.push(`<text x="${(x0 + x1) / 2}" y="${bottom + 34}" text-anchor="middle" font-size="12" fill="#495057">start to exit, median (log scale)</text>`);
  for (const [i, b] of bars.entries()) {
    const y = top + i * rowH;
    const w = Math.max(2, x(b.ms) - x0);
    out.push(`<text x="${labelW}" y="${y + 16}" text-anchor="end" fill="#212529">${esc(b.label)}</text>`);
    out.push(`<rect x="${x0}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 10}" fill="${COLOURS[b.kind]}"/>`);
    out.push(`<text x="${(x0 + w + 6).toFixed(1)}" y="${y + 17}" fill="#212529">${esc(fmtMs(b.ms))}</text>`);
  }
  out.push(`<line x1="${x0}" y1="${top - 4}" x2="${x0}" y2="${bottom}" stroke="#495057" stroke-width="1"/>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
