#!/usr/bin/env node
// kafkajs's transactional producer against a live `pgbroker serve`.
//
//   node transactions.mjs BOOTSTRAP PREFIX [--debug]
//
// Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA (topics are
// created with the pgbroker CLI). Prints one PASS or FAIL line per scenario;
// exits 1 if any failed.
//
//   txn_exactly_once  produce to several partitions of two topics and send
//                     offsets in a transaction, commit; abort another; the
//                     read_committed consumer sees exactly the committed
//                     records, read_uncommitted the aborted ones too, and
//                     the group's offset is the committed one.
//   txn_fencing       a second producer with the same transactional id
//                     fences the first, whose records stay invisible.
import { execFileSync } from 'node:child_process'
import { Kafka, logLevel } from 'kafkajs'

const WAIT_MS = 20_000
const args = process.argv.slice(2)
const [bootstrap, prefix] = args.filter(a => !a.startsWith('--'))
if (!bootstrap || !prefix) {
  console.error('usage: transactions.mjs BOOTSTRAP PREFIX [--debug]')
  process.exit(2)
}
const kafka = new Kafka({
  clientId: 'pgbroker-compat-txn',
  brokers: [bootstrap],
  connectionTimeout: 5000,
  requestTimeout: 10_000,
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  logLevel: args.includes('--debug') ? logLevel.DEBUG : logLevel.NOTHING,
})

class Check extends Error {
  name = 'Check'
}
const check = (cond, msg) => {
  if (!cond) throw new Check(msg)
}

function pgbroker(...a) {
  const env = process.env
  execFileSync(env.PGBROKER_BIN, ['--database-url', env.PGBROKER_DATABASE_URL, '--schema', env.PGBROKER_SCHEMA, ...a])
}

// Every value of `topics` visible with `readUncommitted`, read from the
// start until `want` records arrived and nothing more came for a second.
async function readBack(topics, readUncommitted, want) {
  const consumer = kafka.consumer({
    groupId: `${prefix}reader-${Date.now()}-${Math.random()}`,
    readUncommitted,
    sessionTimeout: 6000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 300,
  })
  const seen = []
  const last = new Map()
  let lastAt = Date.now()
  await consumer.connect()
  try {
    for (const t of topics) await consumer.subscribe({ topic: t, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const key = `${topic}/${partition}`
        const off = Number(message.offset)
        check(off > (last.get(key) ?? -1), `offsets went backwards on ${key}`)
        last.set(key, off)
        seen.push(message.value.toString())
        lastAt = Date.now()
      },
    })
    const deadline = Date.now() + WAIT_MS
    while (Date.now() < deadline && (seen.length < want || Date.now() - lastAt < 1000)) {
      await new Promise(r => setTimeout(r, 100))
    }
  } finally {
    await consumer.disconnect()
  }
  return seen
}

async function exactlyOnce() {
  const src = `${prefix}in`
  const out = `${prefix}out`
  const out2 = `${prefix}out2`
  pgbroker('topic', 'create', src, '--partitions', '1')
  pgbroker('topic', 'create', out, '--partitions', '3')
  pgbroker('topic', 'create', out2, '--partitions', '2')
  const group = `${prefix}g`
  const producer = kafka.producer({ transactionalId: `${prefix}txn`, maxInFlightRequests: 1, idempotent: true })
  await producer.connect()
  try {
    let txn = await producer.transaction()
    for (let i = 0; i < 10; i++) {
      await txn.send({ topic: out, messages: [{ key: `k${i}`, value: `c-${i}` }] })
      await txn.send({ topic: out2, messages: [{ key: `k${i}`, value: `c2-${i}` }] })
    }
    await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic: src, partitions: [{ partition: 0, offset: '10' }] }] })
    await txn.commit()
    txn = await producer.transaction()
    for (let i = 0; i < 6; i++) {
      await txn.send({ topic: out, messages: [{ key: `a${i}`, value: `aborted-${i}` }] })
      await txn.send({ topic: out2, messages: [{ key: `a${i}`, value: `aborted2-${i}` }] })
    }
    await txn.abort()
    txn = await producer.transaction()
    await txn.send({ topic: out, messages: [{ key: 'last', value: 'c-last' }] })
    await txn.commit()
  } finally {
    await producer.disconnect()
  }
  const want = [...Array(10).keys()].flatMap(i => [`c-${i}`, `c2-${i}`]).concat(['c-last']).sort()
  const rc = (await readBack([out, out2], false, want.length)).sort()
  check(JSON.stringify(rc) === JSON.stringify(want), `read_committed saw ${rc}, want ${want}`)
  const ru = await readBack([out, out2], true, want.length + 12)
  check(ru.filter(v => v.startsWith('aborted')).length === 12, `read_uncommitted saw ${ru.length} records`)
  const admin = kafka.admin()
  await admin.connect()
  try {
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [src] })
    const p0 = offsets[0].partitions.find(p => p.partition === 0)
    check(p0 && p0.offset === '10', `the group's committed offset is ${JSON.stringify(offsets)}`)
  } finally {
    await admin.disconnect()
  }
}

async function fencing() {
  const out = `${prefix}fenced`
  pgbroker('topic', 'create', out, '--partitions', '2')
  const id = `${prefix}fence`
  const old = kafka.producer({ transactionalId: id, maxInFlightRequests: 1, idempotent: true })
  await old.connect()
  const fresh = kafka.producer({ transactionalId: id, maxInFlightRequests: 1, idempotent: true })
  try {
    const txn = await old.transaction()
    await txn.send({ topic: out, messages: [0, 1, 2, 3].map(i => ({ key: `k${i}`, value: `zombie-${i}` })) })
    await fresh.connect()
    const t2 = await fresh.transaction()
    let failed = null
    try {
      await txn.commit()
    } catch (e) {
      failed = e
    }
    check(failed !== null, 'the fenced producer committed')
    await t2.send({ topic: out, messages: [{ key: 'k', value: 'fresh' }] })
    await t2.commit()
  } finally {
    await old.disconnect().catch(() => {})
    await fresh.disconnect().catch(() => {})
  }
  const rc = await readBack([out], false, 1)
  check(JSON.stringify(rc) === '["fresh"]', `read_committed saw ${rc}`)
  const ru = await readBack([out], true, 5)
  check(ru.filter(v => v.startsWith('zombie')).length === 4, `read_uncommitted saw ${ru}`)
}

let failed = 0
for (const [name, fn] of [
  ['txn_exactly_once', exactlyOnce],
  ['txn_fencing', fencing],
]) {
  try {
    await fn()
    console.log(`PASS kafkajs ${name}`)
  } catch (e) {
    failed++
    console.error(e)
    console.log(`FAIL kafkajs ${name}: ${e.message}`)
  }
}
process.exit(failed ? 1 : 0)
