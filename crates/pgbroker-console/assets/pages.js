// Overview, topics, groups, users and ACLs.
import { h, link, table, pagedTable, kv, card, errorBox, live, num, rate, time, bytes, age, confirmDialog } from './dom.js';
import { get, post, q } from './api.js';
import { lineChart } from './chart.js';

const enc = encodeURIComponent;

export async function overview() {
  return h('div', {}, h('h1', {}, 'Overview'), live(async () => {
    const [o, hist] = await Promise.all([get('/api/overview'), get('/api/history')]);
    const pg = o.postgres;
    return h('div', {},
      h('div', { class: 'cards' },
        card('Brokers', num(o.nodes.length)),
        card('Produce rate', rate(o.produce_rate)),
        card('Consume rate', rate(o.consume_rate)),
        card('Topics', num(o.topics)),
        card('Partitions', num(o.partitions)),
        card('Records stored', num(o.records)),
        card('PostgreSQL', h('span', { class: pg.ok ? 'ok' : 'bad' }, pg.ok ? `up, ${pg.ping_ms.toFixed(1)} ms` : 'down')),
        card('Pool', `${pg.pool_open - pg.pool_idle} busy / ${pg.pool_open} open / ${pg.pool_max}`)),
      pg.error ? errorBox(pg.error) : null,
      h('h2', {}, 'Rates'),
      lineChart('records per second', hist.points, [{ key: 'produce_rate', label: 'produced' }, { key: 'consume_rate', label: 'committed by groups' }]),
      h('div', { class: 'grid2' },
        h('div', {}, h('h2', {}, 'Largest lags'),
          table(['Group', 'State', 'Members', 'Lag'], o.largest_lags.map(g => [link(g.group, 'groups', g.group), g.state, num(g.members), num(g.lag)]), [2, 3])),
        h('div', {}, h('h2', {}, 'Queue backlogs'),
          table(['Queue', 'Ready', 'In flight', 'Delayed', 'Dead-lettered', 'Oldest ready'],
            o.queue_backlogs.map(x => [link(x.queue, 'queues', x.queue), num(x.ready), num(x.in_flight), num(x.delayed), num(x.dead_lettered), age(x.oldest_ready_age_ms)]), [1, 2, 3, 4, 5]))),
      h('h2', {}, 'Brokers'),
      table(['Node', 'Host', 'Port', 'Rack'], o.nodes.map(n => [num(n.node_id), n.host, String(n.port), n.rack ?? '—'])),
      h('p', { class: 'muted' }, `sampled ${time(o.sampled_at_ms)} UTC`));
  }));
}

export async function topicsPage() {
  const name = h('input', { name: 'name', placeholder: 'topic name', required: true });
  const parts = h('input', { name: 'partitions', type: 'number', min: 1, value: '1' });
  const retention = h('input', { name: 'retention_ms', type: 'number', min: 1, placeholder: 'forever' });
  const msg = h('div');
  const list = h('div');
  const load = async () => {
    const { topics } = await get('/api/topics');
    list.replaceChildren(pagedTable(['Topic', 'Partitions', 'Records', 'Retention', 'Created'],
      topics.map(t => [link(t.name, 'topics', t.name), num(t.partitions), num(t.records),
        t.retention_ms ? age(t.retention_ms) : 'forever', time(t.created_at_ms)]), [1, 2]));
  };
  const form = h('form', { class: 'inline' }, h('label', {}, 'Name', name), h('label', {}, 'Partitions', parts),
    h('label', {}, 'Retention (ms)', retention), h('button', { type: 'submit' }, 'Create topic'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      const body = { name: name.value, partitions: Number(parts.value || 1) };
      if (retention.value) body.retention_ms = Number(retention.value);
      await post('/api/topics', body);
      msg.replaceChildren(h('p', { class: 'ok' }, 'Created topic ', name.value));
      name.value = '';
      await load();
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  });
  await load();
  return h('div', {}, h('h1', {}, 'Topics'), form, msg, list);
}

export async function topicPage(topic) {
  const msg = h('div');
  const add = h('input', { type: 'number', min: 1, value: '1', 'aria-label': 'partitions to add' });
  const addForm = h('form', { class: 'inline' }, h('label', {}, 'Add partitions', add), h('button', { type: 'submit' }, 'Add'));
  addForm.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      const t = await post(`/api/topics/${enc(topic)}/partitions`, { additional: Number(add.value) });
      msg.replaceChildren(h('p', { class: 'ok' }, `The topic has ${t.partitions} partitions.`));
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  });
  const del = h('button', { class: 'danger', onclick: async () => {
    if (!await confirmDialog(`Delete topic ${topic} and all its records?`, topic)) return;
    try { await post(`/api/topics/${enc(topic)}/delete`, { confirm: topic }); location.hash = '#/topics'; } catch (e) { msg.replaceChildren(errorBox(e)); }
  } }, 'Delete topic');
  return h('div', {},
    h('h1', {}, 'Topic ', h('span', { class: 'name' }, topic)),
    h('div', { class: 'toolbar' }, link('Browse messages', 'topics', topic, 'messages'), addForm, del),
    msg,
    live(async () => {
      const [d, hist] = await Promise.all([get(`/api/topics/${enc(topic)}`), get('/api/history' + q({ topic }))]);
      const parts = d.partition_states;
      return h('div', {},
        kv([['Partitions', num(parts.length)], ['Records', num(parts.reduce((a, p) => a + p.records, 0))],
          ['Bytes', bytes(parts.reduce((a, p) => a + p.bytes, 0))],
          ['Retention', d.retention_ms ? age(d.retention_ms) : 'forever'],
          ['Retention bytes', d.retention_bytes ? bytes(d.retention_bytes) : 'none'],
          ['Max message', bytes(d.max_message_bytes)], ['Created', time(d.created_at_ms)]]),
        h('h2', {}, 'Rates'),
        lineChart('records per second', hist.points, [{ key: 'produce_rate', label: 'produced' }]),
        h('h2', {}, 'Partitions'),
        pagedTable(['Partition', 'Log start', 'High watermark', 'Records', 'Bytes'],
          parts.map(p => [String(p.partition), num(p.log_start_offset), num(p.high_watermark), num(p.records), bytes(p.bytes)]), [0, 1, 2, 3, 4]));
    }, 10000));
}

export async function groupsPage() {
  return h('div', {}, h('h1', {}, 'Consumer groups'), live(async () => {
    const { groups } = await get('/api/groups');
    return pagedTable(['Group', 'State', 'Members', 'Lag'],
      groups.map(g => [link(g.group, 'groups', g.group), g.state ?? '—', num(g.members), num(g.lag)]), [2, 3]);
  }));
}

export async function groupPage(group) {
  const msg = h('div');
  const topic = h('input', { 'aria-label': 'topic', placeholder: 'topic', required: true });
  const to = h('select', { 'aria-label': 'reset to' }, ['earliest', 'latest', 'timestamp', 'offset'].map(v => h('option', { value: v }, v)));
  const at = h('input', { 'aria-label': 'timestamp or offset', placeholder: 'ISO time or offset' });
  const reset = h('form', { class: 'inline' }, h('label', {}, 'Topic', topic), h('label', {}, 'To', to), h('label', {}, 'At', at),
    h('button', { type: 'submit' }, 'Reset offsets'));
  reset.addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { topic: topic.value, to: to.value };
    if (to.value === 'timestamp') body.timestamp_ms = Date.parse(at.value);
    if (to.value === 'offset') body.offset = Number(at.value);
    if (!await confirmDialog(`Move the offsets of group ${group} on ${topic.value} to ${to.value}?`)) return;
    try {
      const r = await post(`/api/groups/${enc(group)}/reset`, body);
      msg.replaceChildren(h('p', { class: 'ok' }, `Reset ${r.offsets.length} partitions.`));
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  });
  return h('div', {},
    h('h1', {}, 'Group ', h('span', { class: 'name' }, group)),
    live(async () => {
      const [d, hist] = await Promise.all([get(`/api/groups/${enc(group)}`), get('/api/history' + q({ group }))]);
      const lag = d.partitions.reduce((a, p) => a + p.lag, 0);
      return h('div', {},
        kv([['State', d.state], ['Protocol', d.protocol_type || '—'], ['Strategy', d.strategy || '—'],
          ['Generation', String(d.generation)], ['Members', num(d.members.length)], ['Total lag', h('span', { 'data-testid': 'total-lag' }, num(lag))]]),
        h('h2', {}, 'Lag over time'),
        lineChart('records behind', hist.points, [{ key: 'lag', label: 'lag' }]),
        h('h2', {}, 'Members'),
        table(['Member', 'Client', 'Last heartbeat', 'Assignment'], d.members.map(m => [m.member_id, m.client_id, time(m.last_heartbeat_ms),
          m.assignment.map(tp => `${tp.topic}[${tp.partition}]`).join(', ')])),
        h('h2', {}, 'Partitions'),
        pagedTable(['Topic', 'Partition', 'Committed', 'High watermark', 'Lag', 'Owner'],
          d.partitions.map(p => [p.topic, String(p.partition), num(p.committed), num(p.high_watermark), num(p.lag), p.member ?? '—']), [1, 2, 3, 4]));
    }),
    h('h2', {}, 'Reset offsets'),
    h('p', { class: 'muted' }, 'Only while the group has no members.'),
    reset, msg);
}

export async function usersPage() {
  const u = await get('/api/users');
  const res = a => `${a.resource_type} ${a.pattern === 'literal' ? '' : a.pattern + ' '}${JSON.stringify(a.name)}`;
  return h('div', {}, h('h1', {}, 'Users and ACLs'),
    h('p', { class: 'muted' }, 'Read-only here; change them with pgbroker user and pgbroker acl.'),
    h('h2', {}, 'Users'),
    table(['User', 'Iterations', 'Added', 'Password set', 'Super user'], u.users.map(x => [x.name, num(x.iterations), time(x.created_at_ms), time(x.updated_at_ms),
      u.super_users.includes(x.name) ? 'yes' : ''])),
    h('h2', {}, 'Grants'),
    table(['User', 'Permission', 'On'], u.acls.map(a => [a.user, a.permission, res(a)])));
}
