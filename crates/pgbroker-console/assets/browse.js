// The message browser: one page of a partition at a time, by offset, by
// timestamp, the newest page, or a key search; values as UTF-8, pretty
// JSON or hex. And a form to produce a test message.
import { h, link, errorBox, render, decode, time, num } from './dom.js';
import { get, post, q } from './api.js';

const enc = encodeURIComponent;

export async function browser(topic) {
  const partition = h('input', { type: 'number', min: 0, value: '0' });
  const mode = h('select', {}, [['newest', 'newest'], ['offset', 'offset'], ['timestamp', 'time'], ['key', 'key']]
    .map(([v, t]) => h('option', { value: v }, t)));
  const from = h('input', { placeholder: 'offset, ISO time or key' });
  const limit = h('select', {}, ['20', '50', '100', '200'].map(v => h('option', { value: v }, v)));
  limit.value = '50';
  const view = h('select', {}, [['utf8', 'UTF-8'], ['json', 'JSON'], ['hex', 'hex']].map(([v, t]) => h('option', { value: v }, t)));
  const out = h('div');
  let last = null;
  const params = (over = {}) => {
    const p = { partition: partition.value, limit: limit.value };
    if (mode.value === 'offset') p.offset = from.value;
    if (mode.value === 'timestamp') p.timestamp_ms = Date.parse(from.value);
    if (mode.value === 'key') { p.key = from.value; if (partition.value === '') delete p.partition; }
    return Object.assign(p, over);
  };
  const load = async over => {
    try {
      last = await get(`/api/topics/${enc(topic)}/messages` + q(params(over)));
      draw();
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const draw = () => {
    const r = last;
    if (!r) return;
    const prev = Math.max(r.log_start, r.start - Number(limit.value));
    const rows = r.records.map(m => h('tr', { 'data-offset': m.offset },
      h('td', { class: 'num' }, String(m.offset)),
      h('td', {}, time(m.timestamp_ms)),
      h('td', {}, render(m.key, view.value === 'hex' ? 'hex' : 'utf8')),
      h('td', {}, render(m.value, view.value), m.truncated ? h('span', { class: 'muted' }, `(first 64 KiB of ${num(m.value_bytes)} bytes)`) : null),
      h('td', {}, m.headers.map(x => h('div', {}, h('b', {}, x.key), ': ', x.value === null ? 'null' : new TextDecoder().decode(decode(x.value)))))));
    out.replaceChildren(
      h('p', { class: 'muted' }, `partition ${r.partition} of ${r.partitions}: offsets ${num(r.log_start)} to ${num(r.high_watermark - 1)}; ` +
        (r.scanned && mode.value === 'key' ? `scanned ${num(r.scanned)} records; ` : '') + `showing ${r.records.length}`),
      h('div', { class: 'toolbar' },
        h('button', { class: 'secondary', disabled: r.start <= r.log_start || mode.value === 'key', onclick: () => { mode.value = 'offset'; from.value = String(prev); load(); } }, 'Previous page'),
        h('button', { class: 'secondary', disabled: r.next_offset >= r.high_watermark, onclick: () => {
          if (mode.value !== 'key') mode.value = 'offset';
          if (mode.value === 'key') load({ offset: r.next_offset, partition: r.partition }); else { from.value = String(r.next_offset); load(); }
        } }, mode.value === 'key' ? 'Search on' : 'Next page')),
      h('table', { class: 'messages' },
        h('thead', {}, h('tr', {}, ['Offset', 'Time (UTC)', 'Key', 'Value', 'Headers'].map(t => h('th', {}, t)))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'no messages here')))));
  };
  view.addEventListener('change', draw);
  const form = h('form', { class: 'inline' }, h('label', {}, 'Partition', partition), h('label', {}, 'From', mode), h('label', {}, 'At', from),
    h('label', {}, 'Page', limit), h('label', {}, 'Show as', view), h('button', { type: 'submit' }, 'Load'));
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });

  const pKey = h('input', { 'aria-label': 'key', placeholder: 'key (optional)' });
  const pValue = h('textarea', { 'aria-label': 'value', placeholder: 'value' });
  const pHeaders = h('textarea', { 'aria-label': 'headers', placeholder: 'headers, one name=value a line' });
  const pMsg = h('div');
  const produce = h('form', { class: 'inline' }, h('label', {}, 'Key', pKey), h('label', {}, 'Value', pValue), h('label', {}, 'Headers', pHeaders),
    h('button', { type: 'submit' }, 'Produce'));
  produce.addEventListener('submit', async ev => {
    ev.preventDefault();
    const headers = pHeaders.value.split('\n').filter(l => l.trim()).map(l => {
      const i = l.indexOf('=');
      return i < 0 ? { key: l, value: null } : { key: l.slice(0, i), value: l.slice(i + 1) };
    });
    try {
      const r = await post(`/api/topics/${enc(topic)}/messages`, { key: pKey.value || null, value: pValue.value, headers });
      const p = r.positions[0];
      pMsg.replaceChildren(h('p', { class: 'ok' }, `Produced to partition ${p.partition} at offset ${p.offset}.`));
    } catch (e) { pMsg.replaceChildren(errorBox(e)); }
  });
  await load();
  return h('div', {}, h('h1', {}, 'Messages of ', link(topic, 'topics', topic)), form, out,
    h('h2', {}, 'Produce a test message'), produce, pMsg);
}
