// Line charts as inline SVG, drawn from the broker's own history.
import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const COLORS = ['#2457c5', '#c2410c', '#067647', '#7c3aed'];

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// points: [{at_ms, ...}], series: [{key, label}]
export function lineChart(title, points, series) {
  const W = 1000, H = 200, L = 60, R = 10, T = 10, B = 22;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  const xs = points.map(p => p.at_ms);
  const vals = series.flatMap(s => points.map(p => p[s.key]).filter(v => v !== null && v !== undefined));
  const box = h('div', { class: 'chart' }, h('div', { class: 'legend' }, h('b', {}, title),
    series.map((s, i) => h('span', { class: `c${i % COLORS.length}` }, s.label))));
  if (points.length < 2 || vals.length === 0) {
    box.append(h('p', { class: 'muted' }, 'collecting samples…'));
    return box;
  }
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y1 = Math.max(1, ...vals);
  const sx = t => L + (W - L - R) * (t - x0) / Math.max(1, x1 - x0);
  const sy = v => T + (H - T - B) * (1 - v / y1);
  for (const f of [0, 0.5, 1]) {
    const y = sy(y1 * f);
    root.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#e5e8ee' }));
    const label = svg('text', { x: L - 4, y: y + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#6b7385' });
    label.textContent = Number(y1 * f).toLocaleString('en-US', { maximumFractionDigits: 1 });
    root.append(label);
  }
  const span = svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 10, fill: '#6b7385' });
  span.textContent = `last ${Math.round((x1 - x0) / 1000)} s`;
  root.append(span);
  series.forEach((s, i) => {
    const d = points.filter(p => p[s.key] !== null && p[s.key] !== undefined)
      .map((p, j) => `${j ? 'L' : 'M'}${sx(p.at_ms).toFixed(1)},${sy(p[s.key]).toFixed(1)}`).join(' ');
    if (d) root.append(svg('path', { d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2 }));
  });
  box.append(root);
  return box;
}
