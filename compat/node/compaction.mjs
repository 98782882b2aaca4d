#!/usr/bin/env node
// Compacted topics through kafkajs, against a live `pgbroker serve`.
//
//   node compaction.mjs BOOTSTRAP PREFIX [--debug]
//
// Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA (the CLI
// creates a topic and runs the cleaner). Prints one PASS or FAIL line per
// scenario; exits 1 if any failed.
//
//   connect_check   the admin client creates a compacted topic, and
//                   DescribeConfigs reads `cleanup.policy` as Kafka Connect's
//                   check wants it; bad values are refused with
//                   INVALID_CONFIG and create nothing; AlterConfigs changes
//                   the policy.
//   compacted_read  50 keys written 20 times, 5 of them deleted; after two
//                   forced cleaner passes (the tombstone horizon being 0) a
//                   consumer from the beginning reads exactly the latest
//                   value of each live key, offsets ascending with holes; one
//                   that seeks into a removed range starts at the next
//                   survivor; a record without a key is refused.
import { execFileSync } from 'node:child_process'
import kafkajs from 'kafkajs'

const { ConfigResourceTypes, Kafka, logLevel } = kafkajs

const WAIT_MS = 20_000
const KEYS = 50
const ROUNDS = 20
const DELETED = 5
const SEGMENT = 100
const HOUR_MS = 3_600_000
const args = process.argv.slice(2)
const [bootstrap, prefix] = args.filter(a => !a.startsWith('--'))
if (!bootstrap || !prefix) {
  console.error('usage: compaction.mjs BOOTSTRAP PREFIX [--debug]')
  process.exit(2)
}
const kafka = new Kafka({
  clientId: 'pgbroker-compat-compaction',
  brokers: [bootstrap],
  connectionTimeout: 5000,
  requestTimeout: 10_000,
  retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 2000 },
  logLevel: args.includes('--debug') ? logLevel.DEBUG : logLevel.NOTHING,
})

class Check extends Error {
  name = 'Check'
}
const check = (cond, msg) => {
  if (!cond) throw new Check(msg)
}
// What the scenario was doing, for the FAIL line of an error a client threw.
let stage = ''

function pgbroker(...a) {
  const env = process.env
  return execFileSync(env.PGBROKER_BIN, ['--database-url', env.PGBROKER_DATABASE_URL, '--schema', env.PGBROKER_SCHEMA, ...a])
    .toString()
}

// The error type kafkajs gives a refused call, found in aggregated errors too.
async function refusal(call) {
  try {
    await call()
    return 'none'
  } catch (e) {
    const all = [e, ...(e.errors ?? []), ...(e.originalError ? [e.originalError] : [])]
    return all.map(x => x.type).find(Boolean) ?? e.message
  }
}

async function configs(admin, name) {
  const r = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name }], includeSynonyms: false })
  return Object.fromEntries(r.resources[0].configEntries.map(c => [c.configName, c.configValue]))
}

// Kafka Connect's reading of cleanup.policy: trimmed, lower-cased items.
const connectPolicy = v => new Set(v.split(',').map(p => p.trim().toLowerCase()))

async function connectCheck() {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const name = `${prefix}connect_configs`
    const topic = (t, entries) => ({ topic: t, numPartitions: 1, replicationFactor: 1, configEntries: entries })
    await admin.createTopics({ topics: [topic(name, [{ name: 'cleanup.policy', value: 'compact' }])], waitForLeaders: true })
    let got = await configs(admin, name)
    check(got['cleanup.policy'] === 'compact', `cleanup.policy reads ${got['cleanup.policy']}`)
    const policy = connectPolicy(got['cleanup.policy'])
    check(policy.size === 1 && policy.has('compact'), 'Connect would refuse this topic')
    check(got['delete.retention.ms'] === '86400000', `delete.retention.ms ${got['delete.retention.ms']}`)
    const bad = `${prefix}bad_policy`
    let why = await refusal(() => admin.createTopics({ topics: [topic(bad, [{ name: 'cleanup.policy', value: 'compacted' }])] }))
    check(why === 'INVALID_CONFIG', `a bad cleanup.policy got ${why}`)
    why = await refusal(() =>
      admin.createTopics({
        topics: [topic(bad, [{ name: 'cleanup.policy', value: 'compact' }, { name: 'min.cleanable.dirty.ratio', value: '2' }])],
      }),
    )
    check(why === 'INVALID_CONFIG', `a ratio of 2 got ${why}`)
    check(!pgbroker('topic', 'list', '--format', 'json').includes(bad), 'a refused topic was created')
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name, configEntries: [{ name: 'cleanup.policy', value: 'compact,delete' }] }],
    })
    got = await configs(admin, name)
    check(got['cleanup.policy'] === 'compact,delete', `after AlterConfigs: ${got['cleanup.policy']}`)
  } finally {
    await admin.disconnect()
  }
}

// Every record of `topic` partition 0 from `offset` (a seek there), until
// `want` arrived and nothing more came for a second.
async function readFrom(topic, offset, want) {
  stage = `reading from offset ${offset}`
  const consumer = kafka.consumer({
    groupId: `${prefix}reader-${Date.now()}-${Math.random()}`,
    sessionTimeout: 6000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 300,
  })
  const seen = []
  let lastAt = Date.now()
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push([Number(message.offset), message.key?.toString(), message.value?.toString() ?? null])
        lastAt = Date.now()
      },
    })
    consumer.seek({ topic, partition: 0, offset: String(offset) })
    const deadline = Date.now() + WAIT_MS
    while (Date.now() < deadline && (seen.length < want || Date.now() - lastAt < 1000)) {
      await new Promise(r => setTimeout(r, 100))
    }
  } finally {
    await consumer.disconnect()
  }
  return seen
}

async function compactedRead() {
  const topic = `${prefix}state`
  // The server's own cleaner runs every few seconds: a compaction lag of
  // an hour keeps it off the topic until the full read before compaction
  // is done, and setting the lag to 0 then lets the forced passes run.
  pgbroker('topic', 'create', topic, '--segment-records', String(SEGMENT), '--cleanup-policy', 'compact',
    '--delete-retention-ms', '0', '--min-compaction-lag-ms', String(HOUR_MS))
  const latest = new Map()
  const messages = []
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < KEYS; k++) {
      const key = `k${String(k).padStart(2, '0')}`
      if (r === ROUNDS - 1 && k >= KEYS - DELETED) {
        messages.push({ key, value: null, partition: 0 })
        latest.delete(key)
      } else {
        const value = `${prefix}${k}@${r}`
        messages.push({ key, value, partition: 0 })
        latest.set(key, value)
      }
    }
  }
  const hw = messages.length
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    for (let i = 0; i < messages.length; i += 100) {
      stage = `producing offsets ${i}..${i + 99}`
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 100) })
    }
    stage = 'producing a record without a key'
    const why = await refusal(() => producer.send({ topic, acks: -1, messages: [{ value: 'no key', partition: 0 }] }))
    check(why === 'INVALID_RECORD', `a record without a key got ${why}, want INVALID_RECORD`)
  } finally {
    await producer.disconnect()
  }
  const before = await readFrom(topic, 0, hw)
  check(before.length === hw, `read ${before.length} of ${hw} records before compaction`)
  stage = 'compacting'
  pgbroker('topic', 'alter', topic, '--min-compaction-lag-ms', '0')
  // Two whole passes: the second is past the tombstones' horizon (0 ms). A
  // pass that met the server's cleaner on the partition skipped it (busy).
  let whole = 0
  for (let pass = 0; pass < 10 && whole < 2; pass++) {
    const out = pgbroker('maintain', '--force-compaction')
    check(out.includes('compaction:'), out)
    if (out.includes('(0 busy)')) whole++
  }
  check(whole === 2, 'the cleaner found the partition busy in 9 of 10 passes')
  const after = await readFrom(topic, 0, KEYS - DELETED)
  const got = new Map(after.map(([, k, v]) => [k, v]))
  check(got.size === latest.size && [...latest].every(([k, v]) => got.get(k) === v),
    `${got.size} keys read, ${latest.size} expected`)
  const offsets = after.map(([o]) => o)
  check(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), 'offsets not strictly ascending')
  check(offsets.length === KEYS - DELETED, `${offsets.length} records survive, want ${KEYS - DELETED}`)
  check(offsets.at(-1) < hw - DELETED, `the deleted keys' tombstones are gone: last offset ${offsets.at(-1)}`)
  const inside = 3
  check(!offsets.includes(inside), 'offset 3 should be removed')
  const later = await readFrom(topic, inside, 1)
  check(later.length > 0 && later[0][0] === offsets[0], `from offset ${inside}: first ${later[0]}, want ${offsets[0]}`)
}

let failed = 0
for (const [name, fn] of [
  ['connect_check', connectCheck],
  ['compacted_read', compactedRead],
]) {
  stage = name
  try {
    await fn()
    console.log(`PASS kafkajs ${name}`)
  } catch (e) {
    failed++
    console.error(e)
    console.log(`FAIL kafkajs ${name}: ${e instanceof Check ? '' : `(${stage}) `}${e.message}`)
  }
}
process.exit(failed ? 1 : 0)
