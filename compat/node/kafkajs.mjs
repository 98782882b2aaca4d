#!/usr/bin/env node
// kafkajs against a live `pgbroker serve`.
//
//   node kafkajs.mjs BOOTSTRAP PREFIX [--scenario NAME ...] [--debug]
//
// Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA: topics a
// scenario starts from are created with the pgbroker CLI, so that a broken
// CreateTopics fails only the admin scenario. Prints one PASS or FAIL line per
// scenario; exits 1 if any failed.
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { Kafka, logLevel } from 'kafkajs'

const require = createRequire(import.meta.url)
const KAFKAJS_VERSION = require('kafkajs/package.json').version

const SCENARIO_MS = 120_000 // a scenario that takes longer fails
const WAIT_MS = 20_000 // one wait for data or a rebalance
const SESSION_TIMEOUT = 6000
const HEARTBEAT = 1000
// Fetch long-poll; kafkajs waits for the one in flight when disconnecting.
const MAX_WAIT = 500

const args = process.argv.slice(2)
const positional = args.filter((a, i) => !a.startsWith('--') && !(args[i - 1] === '--scenario'))
const [bootstrap, prefix] = positional
if (!bootstrap || !prefix) {
  console.error('usage: kafkajs.mjs BOOTSTRAP PREFIX [--scenario NAME ...] [--debug]')
  process.exit(2)
}
const only = args.flatMap((a, i) => (args[i - 1] === '--scenario' ? [a] : []))
const debug = args.includes('--debug')

const kafka = new Kafka({
  clientId: 'pgbroker-compat',
  brokers: [bootstrap],
  connectionTimeout: 5000,
  requestTimeout: 10_000,
  // Few, quick retries: a broken answer should fail fast, not after minutes.
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  logLevel: debug ? logLevel.DEBUG : logLevel.NOTHING,
})

class Check extends Error {
  name = 'Check'
}
const check = (cond, msg) => {
  if (!cond) throw new Check(msg)
}
const sleep = ms => new Promise(r => setTimeout(r, ms))

async function waitUntil(cond, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await cond()) return
    await sleep(200)
  }
  throw new Check(`timed out after ${ms / 1000}s waiting for ${what}`)
}

function makeTopic(name, partitions) {
  for (const v of ['PGBROKER_BIN', 'PGBROKER_DATABASE_URL', 'PGBROKER_SCHEMA']) {
    check(process.env[v], `environment variable ${v} is required`)
  }
  execFileSync(process.env.PGBROKER_BIN, [
    '--database-url', process.env.PGBROKER_DATABASE_URL, '--schema', process.env.PGBROKER_SCHEMA,
    'topic', 'create', name, '--partitions', String(partitions),
  ], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 })
}

async function withAdmin(fn) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    return await fn(admin)
  } finally {
    await admin.disconnect()
  }
}

async function produce(topic, messages, opts = {}) {
  const producer = kafka.producer(opts.idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {})
  await producer.connect()
  try {
    // One send per 500 messages, acks=all.
    const acks = []
    for (let i = 0; i < messages.length; i += 500) {
      acks.push(...await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) }))
    }
    return acks
  } finally {
    await producer.disconnect()
  }
}

async function highWatermarks(topic) {
  const offs = await withAdmin(a => a.fetchTopicOffsets(topic))
  return Object.fromEntries(offs.map(o => [o.partition, Number(o.high)]))
}

// Every record of the topic, read by a fresh group from the beginning until
// each partition reaches its high watermark.
async function readAll(topic) {
  const high = await highWatermarks(topic)
  const got = []
  const pos = Object.fromEntries(Object.keys(high).map(p => [p, 0]))
  const consumer = kafka.consumer({
    groupId: `${prefix}read-${Date.now()}-${Math.random()}`,
    sessionTimeout: SESSION_TIMEOUT, heartbeatInterval: HEARTBEAT, rebalanceTimeout: 10_000, maxWaitTimeInMs: MAX_WAIT,
  })
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push({ partition, ...message, offset: Number(message.offset) })
        pos[partition] = Math.max(pos[partition], Number(message.offset) + 1)
      },
    })
    await waitUntil(() => Object.keys(high).every(p => pos[p] >= high[p]),
      `records up to the high watermarks ${JSON.stringify(high)} (at ${JSON.stringify(pos)})`)
  } finally {
    await consumer.disconnect()
  }
  return got
}

const headerText = h => Object.fromEntries(Object.entries(h || {}).map(([k, v]) =>
  [k, Array.isArray(v) ? v.map(String) : String(v)]))

// ---------------------------------------------------------------------------

async function metadata() {
  const topic = `${prefix}meta`
  makeTopic(topic, 3)
  const cluster = await withAdmin(a => a.describeCluster())
  check(cluster.brokers.length > 0, 'describeCluster lists no broker')
  check(cluster.brokers.some(b => `${b.host}:${b.port}` === bootstrap),
    `no broker at ${bootstrap}: ${JSON.stringify(cluster.brokers)}`)
  const topics = await withAdmin(a => a.listTopics())
  check(topics.includes(topic), `${topic} not in listTopics (${topics.length} topics)`)
  const md = await withAdmin(a => a.fetchTopicMetadata({ topics: [topic] }))
  const parts = md.topics[0].partitions
  check(JSON.stringify(parts.map(p => p.partitionId).sort()) === '[0,1,2]',
    `partitions ${JSON.stringify(parts)}`)
  const ids = new Set(cluster.brokers.map(b => b.nodeId))
  check(parts.every(p => ids.has(p.leader)), `leaders ${parts.map(p => p.leader)} not among ${[...ids]}`)
}

async function produceConsume() {
  const topic = `${prefix}pc`
  makeTopic(topic, 3)
  const messages = []
  for (let i = 0; i < 60; i++) {
    messages.push({ key: `key-${i % 7}`, value: `value-${i}`, headers: { seq: String(i), kind: 'compat' } })
  }
  messages.push({ key: null, value: 'no-key', headers: {} })
  messages.push({ key: 'dup-header', value: 'v', headers: { h: ['1', '2'] } })
  messages.push({ key: 'bin', value: Buffer.from([0, 1, 2, 255, 254]), headers: { b: Buffer.from([0, 255]) } })
  const acks = await produce(topic, messages)
  check(acks.length > 0 && acks.every(a => a.errorCode === 0), `produce acks ${JSON.stringify(acks)}`)
  const got = await readAll(topic)
  check(got.length === messages.length, `read back ${got.length} records, produced ${messages.length}`)
  const byValue = new Map(got.map(r => [r.value.toString('hex'), r]))
  const perKey = new Map()
  for (const [i, m] of messages.entries()) {
    const r = byValue.get(Buffer.from(m.value).toString('hex'))
    check(r, `record ${i} (${m.value}) not read back`)
    const key = r.key === null ? null : r.key.toString()
    check(key === m.key, `record ${i}: key ${key}, want ${m.key}`)
    const hdr = JSON.stringify(headerText(r.headers))
    check(hdr === JSON.stringify(headerText(m.headers)), `record ${i}: headers ${hdr}, want ${JSON.stringify(headerText(m.headers))}`)
    if (i < 60) {
      const list = perKey.get(m.key) || []
      list.push([r.partition, r.offset])
      perKey.set(m.key, list)
    }
  }
  for (const [key, pos] of perKey) {
    check(new Set(pos.map(p => p[0])).size === 1, `key ${key} in several partitions: ${JSON.stringify(pos)}`)
    check(pos.every((p, i) => i === 0 || p[1] > pos[i - 1][1]), `key ${key} out of order: ${JSON.stringify(pos)}`)
  }
}

// One group member: its assignment from GROUP_JOIN events, the values it
// read. kafkajs commits after each batch (autoCommit, no interval set).
async function member(group, topic, name, seen) {
  const consumer = kafka.consumer({
    groupId: group, sessionTimeout: SESSION_TIMEOUT, heartbeatInterval: HEARTBEAT, rebalanceTimeout: 10_000, maxWaitTimeInMs: MAX_WAIT,
  })
  const m = { name, consumer, assigned: [], seen: [] }
  consumer.on(consumer.events.GROUP_JOIN, e => {
    m.assigned = (e.payload.memberAssignment[topic] || []).slice().sort()
  })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      m.seen.push({ partition, offset: Number(message.offset), value: message.value.toString() })
      seen.add(message.value.toString())
    },
  })
  return m
}

async function committed(group, topic) {
  const res = await withAdmin(a => a.fetchOffsets({ groupId: group, topics: [topic] }))
  return Object.fromEntries(res[0].partitions.map(p => [p.partition, Number(p.offset)]))
}

async function group() {
  const topic = `${prefix}grp`
  const groupId = `${prefix}group`
  makeTopic(topic, 6)
  const seen = new Set()
  const produced = []
  const add = async (tag, n) => {
    const msgs = Array.from({ length: n }, (_, i) => ({ key: `k${i % 17}`, value: `${tag}-${i}` }))
    await produce(topic, msgs)
    produced.push(...msgs.map(m => m.value))
  }
  const covered = ms => {
    const flat = ms.flatMap(m => m.assigned).sort()
    return JSON.stringify(flat) === '[0,1,2,3,4,5]' && ms.every(m => m.assigned.length > 0)
  }
  const allSeen = () => produced.every(v => seen.has(v))
  const members = []
  try {
    const a = await member(groupId, topic, 'A', seen)
    const b = await member(groupId, topic, 'B', seen)
    members.push(a, b)
    await waitUntil(() => covered([a, b]), 'two members to share 6 partitions')
    await add('one', 300)
    await waitUntil(allSeen, 'phase one records to be consumed')

    const c = await member(groupId, topic, 'C', seen) // joins late
    members.push(c)
    await waitUntil(() => covered([a, b, c]), 'the late member to get partitions')
    check([a, b, c].every(m => m.assigned.length === 2),
      `6 partitions over 3 members: ${JSON.stringify([a, b, c].map(m => m.assigned))}`)
    await add('two', 300)
    await waitUntil(allSeen, 'phase two records to be consumed')

    await b.consumer.disconnect() // leaves mid-way
    await waitUntil(() => covered([a, c]), "the remaining members to take over B's partitions")
    await add('three', 300)
    await waitUntil(allSeen, 'phase three records to be consumed by A and C')

    const high = await highWatermarks(topic)
    const sum = Object.values(high).reduce((x, y) => x + y, 0)
    check(sum === 900, `high watermarks ${JSON.stringify(high)} sum to ${sum}, want 900`)
    let last
    try {
      await waitUntil(async () => {
        last = await committed(groupId, topic)
        return JSON.stringify(last) === JSON.stringify(high)
      }, 'committed offsets to reach the high watermarks')
    } catch (e) {
      throw new Check(`${e.message}: committed ${JSON.stringify(last)}, high ${JSON.stringify(high)}`)
    }
  } finally {
    for (const m of members) await m.consumer.disconnect()
  }

  const after = await committed(groupId, topic)
  const high = await highWatermarks(topic)
  check(JSON.stringify(after) === JSON.stringify(high),
    `after closing the group: committed ${JSON.stringify(after)}, want ${JSON.stringify(high)}`)
  await add('four', 60)
  // A restarted group resumes at the committed offsets, not at the log start.
  const seenD = new Set()
  const d = await member(groupId, topic, 'D', seenD)
  try {
    await waitUntil(() => d.seen.length >= 60, 'the restarted group to read the 60 new records')
    await sleep(1000)
  } finally {
    await d.consumer.disconnect()
  }
  const first = {}
  for (const r of d.seen) if (!(r.partition in first)) first[r.partition] = r.offset
  for (const [p, off] of Object.entries(first)) {
    check(off === after[p], `restarted group began partition ${p} at ${off}, committed ${after[p]}`)
  }
  const values = d.seen.map(r => r.value).sort()
  const want = Array.from({ length: 60 }, (_, i) => `four-${i}`).sort()
  check(JSON.stringify(values) === JSON.stringify(want),
    `restarted group read ${values.length} records, want the 60 new ones (first: ${values.slice(0, 3)})`)
}

async function offsetsByTimestamp() {
  const topic = `${prefix}times`
  makeTopic(topic, 2)
  const base = (Math.floor(Date.now() / 1000) - 3600) * 1000
  const msgs = Array.from({ length: 10 }, (_, i) => ({
    key: 'k', value: `t${i}`, partition: 0, timestamp: String(base + i * 1000),
  }))
  await produce(topic, msgs)
  const got = (await readAll(topic)).sort((x, y) => x.offset - y.offset)
  check(JSON.stringify(got.map(r => Number(r.timestamp))) === JSON.stringify(msgs.map(m => Number(m.timestamp))),
    `timestamps read back ${got.map(r => r.timestamp)}, produced ${msgs.map(m => m.timestamp)}`)
  const at = async ts => {
    const res = await withAdmin(a => a.fetchTopicOffsetsByTimestamp(topic, ts))
    return Object.fromEntries(res.map(r => [r.partition, Number(r.offset)]))
  }
  // kafkajs answers the high watermark where no record is at or after ts.
  const cases = [
    [base - 5000, 0, 'before the first record'],
    [base, 0, 'exactly the first record'],
    [base + 4500, 5, 'between records 4 and 5'],
    [base + 9000, 9, 'exactly the last record'],
    [base + 60_000, 10, 'after the last record (high watermark)'],
  ]
  for (const [ts, want, what] of cases) {
    const res = await at(ts)
    check(res[0] === want, `fetchTopicOffsetsByTimestamp(${what}) = ${res[0]}, want ${want}`)
    check(res[1] === 0, `fetchTopicOffsetsByTimestamp on the empty partition = ${res[1]}, want 0`)
  }
}

async function admin() {
  const topic = `${prefix}admin`
  await withAdmin(async a => {
    const created = await a.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true, timeout: 10_000 })
    check(created === true, `createTopics returned ${created}, want true`)
    const md = await a.fetchTopicMetadata({ topics: [topic] })
    check(md.topics[0].partitions.length === 4, `${topic} has ${md.topics[0].partitions.length} partitions, want 4`)
    // kafkajs answers false when the topic already exists (TOPIC_ALREADY_EXISTS).
    const again = await a.createTopics({ topics: [{ topic, numPartitions: 4 }], timeout: 10_000 })
    check(again === false, `creating an existing topic returned ${again}, want false`)
  })
  await produce(topic, [{ key: 'a', value: 'b' }])
  await withAdmin(async a => {
    await a.deleteTopics({ topics: [topic], timeout: 10_000 })
    await waitUntil(async () => !(await a.listTopics()).includes(topic), `${topic} to leave listTopics`, 10_000)
  })
}

async function idempotent() {
  const topic = `${prefix}idem`
  makeTopic(topic, 3)
  const n = 3000
  const msgs = Array.from({ length: n }, (_, i) => ({ key: `k${i % 13}`, value: `${i % 13}:${Math.floor(i / 13)}` }))
  await produce(topic, msgs, { idempotent: true })
  const got = await readAll(topic)
  check(got.length === n, `read back ${got.length} records, produced ${n} (duplicates or loss)`)
  check(new Set(got.map(r => r.value.toString())).size === n, 'duplicate values')
  const seqs = new Map()
  for (const r of got.sort((x, y) => x.partition - y.partition || x.offset - y.offset)) {
    const [k, s] = r.value.toString().split(':')
    const id = `${r.partition}/${k}`
    const list = seqs.get(id) || []
    list.push(Number(s))
    seqs.set(id, list)
  }
  for (const [id, s] of seqs) {
    check(s.every((v, i) => v === i), `partition/key ${id}: sequence ${s.slice(0, 20)} not 0,1,2,...`)
  }
}

// ---------------------------------------------------------------------------

const scenarios = {
  metadata, 'produce-consume': produceConsume, group, 'offsets-by-timestamp': offsetsByTimestamp,
  admin, idempotent,
}
console.log(`# kafkajs ${KAFKAJS_VERSION} on node ${process.version}`)
let failed = 0
for (const [name, fn] of Object.entries(scenarios)) {
  if (only.length && !only.includes(name)) continue
  const started = Date.now()
  let timer
  // A hard stop if a scenario hangs somewhere that ignores the timeout race
  // (such as a disconnect that never finishes).
  const hard = setTimeout(() => {
    console.log(`FAIL kafkajs ${name}: hung for ${(SCENARIO_MS + 20_000) / 1000}s (hard stop)`)
    process.exit(3)
  }, SCENARIO_MS + 20_000)
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Check(`scenario exceeded ${SCENARIO_MS / 1000}s`)), SCENARIO_MS)
      }),
    ])
    console.log(`PASS kafkajs ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`)
  } catch (e) {
    failed++
    console.log(`FAIL kafkajs ${name}: ${e.name}: ${e.message}`)
    if (!(e instanceof Check)) console.error(e)
  } finally {
    clearTimeout(timer)
    clearTimeout(hard)
  }
}
process.exit(failed ? 1 : 0)
