// Queues: counts by state, a chart of them, browsing each state, redrive
// and purge.
import { h, link, table, kv, errorBox, live, render, decode, num, time, age, bytes, confirmDialog } from './dom.js';
import { get, post, q } from './api.js';
import { lineChart } from './chart.js';

const enc = encodeURIComponent;

export async function queuesPage() {
  return h('div', {}, h('h1', {}, 'Queues'), live(async () => {
    const { queues } = await get('/api/queues');
    return table(['Queue', 'Ready', 'In flight', 'Delayed', 'Dead-lettered', 'Oldest ready', 'Dead-letter queue'],
      queues.map(({ queue: x, stats: s }) => [link(x.name, 'queues', x.name), num(s?.ready), num(s?.in_flight), num(s?.delayed),
        num(s?.dead_lettered), age(s?.oldest_ready_age_ms), x.dead_letter ? link(x.dead_letter, 'queues', x.dead_letter) : '—']), [1, 2, 3, 4, 5]);
  }));
}

const STATES = [['ready', 'Ready'], ['in_flight', 'In flight'], ['delayed', 'Delayed'], ['dead', 'Dead letters held here']];

export async function queuePage(queue) {
  const msg = h('div');
  const list = h('div');
  let state = 'ready';
  let after = 0;
  const view = h('select', { 'aria-label': 'show bodies as' }, [['utf8', 'UTF-8'], ['json', 'JSON'], ['hex', 'hex']].map(([v, t]) => h('option', { value: v }, t)));
  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  let page = null;
  const drawTabs = () => tabs.replaceChildren(...STATES.map(([s, t]) => h('button', { role: 'tab', class: s === state ? 'active' : null,
    onclick: () => { state = s; after = 0; drawTabs(); load(); } }, t)), h('button', { class: 'secondary', onclick: () => load() }, 'Refresh'), view);
  const draw = () => {
    if (!page) return;
    list.replaceChildren(
      h('table', { class: 'messages' },
        h('thead', {}, h('tr', {}, ['Id', 'Sent', 'Due', 'Attempts', 'Priority', 'Group', 'Last error', 'From', 'Body', 'Headers'].map(t => h('th', {}, t)))),
        h('tbody', {}, page.messages.length ? page.messages.map(m => h('tr', { 'data-id': m.id },
          h('td', { class: 'num' }, String(m.id)), h('td', {}, time(m.enqueued_at_ms)), h('td', {}, time(m.visible_at_ms)),
          h('td', { class: 'num' }, String(m.dead_attempts ?? m.attempts)), h('td', { class: 'num' }, String(m.priority)), h('td', {}, m.group ?? '—'),
          h('td', { class: 'last-error' }, m.last_error ?? '—'), h('td', {}, m.dead_letter_source ?? '—'),
          h('td', {}, render(m.body, view.value), m.truncated ? h('span', { class: 'muted' }, `(first 16 KiB of ${bytes(m.body_bytes)})`) : null),
          h('td', {}, m.headers.map(x => h('div', {}, h('b', {}, x.key), ': ', x.value === null ? 'null' : new TextDecoder().decode(decode(x.value)))))))
          : h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'no messages in this state')))),
      h('div', { class: 'toolbar' },
        after ? h('button', { class: 'secondary', onclick: () => { after = 0; load(); } }, 'First page') : null,
        page.next_after ? h('button', { class: 'secondary', onclick: () => { after = page.next_after; load(); } }, 'Next page') : null));
  };
  view.addEventListener('change', draw);
  const load = async () => {
    try {
      page = await get(`/api/queues/${enc(queue)}/messages` + q({ state, after, limit: 50 }));
      draw();
    } catch (e) { list.replaceChildren(errorBox(e)); }
  };
  const redrive = h('button', { onclick: async () => {
    if (!await confirmDialog(`Move the dead letters held in ${queue} back to the queues they died in?`)) return;
    try {
      const r = await post(`/api/queues/${enc(queue)}/redrive`, {});
      msg.replaceChildren(h('p', { class: 'ok' }, `Redrove ${r.moved} messages.`));
      load();
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  } }, 'Redrive dead letters');
  const purge = h('button', { class: 'danger', onclick: async () => {
    if (!await confirmDialog(`Delete every message of queue ${queue}?`, queue)) return;
    try {
      const r = await post(`/api/queues/${enc(queue)}/purge`, { confirm: queue });
      msg.replaceChildren(h('p', { class: 'ok' }, `Purged ${r.purged} messages.`));
      load();
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  } }, 'Purge');
  drawTabs();
  load();
  return h('div', {}, h('h1', {}, 'Queue ', h('span', { class: 'name' }, queue)),
    live(async () => {
      const [d, hist] = await Promise.all([get(`/api/queues/${enc(queue)}`), get('/api/history' + q({ queue }))]);
      const s = d.stats, x = d.queue;
      return h('div', {},
        h('div', { class: 'grid2' },
          kv([['Ready', h('span', { 'data-testid': 'ready' }, num(s.ready))], ['In flight', num(s.in_flight)], ['Delayed', num(s.delayed)],
            ['Dead-lettered', h('span', { 'data-testid': 'dead' }, num(s.dead_lettered))], ['Oldest ready', age(s.oldest_ready_age_ms)]]),
          kv([['Lease', age(x.visibility_timeout_ms)], ['Max attempts', String(x.max_attempts)],
            ['Dead-letter queue', x.dead_letter ? link(x.dead_letter, 'queues', x.dead_letter) : '—'],
            ['Retry backoff', `${age(x.backoff_base_ms)} to ${age(x.backoff_max_ms)}`], ['Created', time(x.created_at_ms)]])),
        h('h2', {}, 'Messages over time'),
        lineChart('messages', hist.points, [{ key: 'ready', label: 'ready' }, { key: 'in_flight', label: 'in flight' },
          { key: 'delayed', label: 'delayed' }, { key: 'dead_lettered', label: 'dead-lettered' }]));
    }),
    h('div', { class: 'toolbar' }, redrive, purge), msg,
    h('h2', {}, 'Browse'), tabs, list);
}
