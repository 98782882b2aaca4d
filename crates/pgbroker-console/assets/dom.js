// Building the page from data. Every piece of text from the broker (names,
// keys, values, headers, errors) goes in as a text node or an attribute
// value, never as markup: nothing here parses HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function link(text, ...path) {
  return h('a', { href: '#/' + path.map(encodeURIComponent).join('/') }, text);
}

export function table(headers, rows, numeric = []) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map((t, i) => h('th', { class: numeric.includes(i) ? 'num' : null }, t)))),
    h('tbody', {}, rows.length ? rows.map(r => h('tr', {}, r.map((c, i) => h('td', { class: numeric.includes(i) ? 'num' : null }, c))))
      : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'none'))));
}

// A table that shows `size` rows at a time, for long lists (1,000 partitions).
export function pagedTable(headers, rows, numeric = [], size = 100) {
  const box = h('div');
  let page = 0;
  const pages = Math.max(1, Math.ceil(rows.length / size));
  const draw = () => {
    const bar = pages > 1 ? h('div', { class: 'toolbar' },
      h('button', { class: 'secondary', disabled: page === 0, onclick: () => { page--; draw(); } }, 'Previous'),
      h('span', { class: 'muted' }, `rows ${page * size + 1}–${Math.min(rows.length, (page + 1) * size)} of ${rows.length}`),
      h('button', { class: 'secondary', disabled: page >= pages - 1, onclick: () => { page++; draw(); } }, 'Next')) : null;
    box.replaceChildren(table(headers, rows.slice(page * size, (page + 1) * size), numeric), bar || '');
  };
  draw();
  return box;
}

export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

export function card(label, value) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, String(e && e.message || e));
}

export const num = n => (n === null || n === undefined) ? '—' : Number(n).toLocaleString('en-US');
export const rate = n => (n === null || n === undefined) ? '—' : `${Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 })}/s`;
export const time = ms => (ms === null || ms === undefined) ? '—' : new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
export function age(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// Bytes from base64; text as UTF-8, pretty JSON or a hex dump.
export function decode(b64) {
  if (b64 === null || b64 === undefined) return null;
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
export function render(b64, view) {
  const b = decode(b64);
  if (b === null) return h('span', { class: 'muted' }, 'null');
  if (view === 'hex') {
    const lines = [];
    for (let i = 0; i < b.length; i += 16) {
      const row = Array.from(b.slice(i, i + 16));
      lines.push(i.toString(16).padStart(6, '0') + '  ' + row.map(x => x.toString(16).padStart(2, '0')).join(' ').padEnd(48) +
        ' ' + row.map(x => (x >= 32 && x < 127) ? String.fromCharCode(x) : '.').join(''));
    }
    return h('pre', {}, lines.join('\n'));
  }
  const text = new TextDecoder('utf-8').decode(b);
  if (view === 'json') {
    try { return h('pre', {}, JSON.stringify(JSON.parse(text), null, 2)); } catch { return h('pre', { title: 'not JSON' }, text); }
  }
  return h('pre', {}, text);
}

// A dialog asking to confirm; with `typed`, the user must type it first.
export function confirmDialog(message, typed) {
  return new Promise(resolve => {
    const input = typed ? h('input', { 'aria-label': 'confirmation', placeholder: typed }) : null;
    const ok = h('button', { class: 'danger', disabled: !!typed }, 'Confirm');
    const close = v => { back.remove(); resolve(v); };
    if (input) input.addEventListener('input', () => { ok.disabled = input.value !== typed; });
    ok.addEventListener('click', () => close(true));
    const back = h('div', { class: 'modal-back' },
      h('div', { class: 'modal', role: 'dialog' },
        h('p', {}, message),
        typed ? h('p', { class: 'muted' }, 'Type ', h('b', {}, typed), ' to confirm.') : null,
        input,
        h('div', { class: 'buttons' }, h('button', { class: 'secondary', onclick: () => close(false) }, 'Cancel'), ok)));
    document.body.append(back);
    (input || ok).focus();
  });
}

// A part of a page drawn by `fill` now and again every `ms` while it is
// on the page; an error is shown in its place until the next success.
export function live(fill, ms = 5000) {
  const box = h('div', { class: 'live' });
  let drawn = false;
  const draw = async () => {
    if (drawn && !box.isConnected) return;
    try {
      box.replaceChildren(await fill());
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
    drawn = true;
    setTimeout(draw, ms);
  };
  draw();
  return box;
}
