// pgbroker's SQL functions through node-postgres: send, receive, ack and
// nack on a queue, take in a rolled-back and a committed transaction, refusals with their SQLSTATEs, and produce to a topic
// inside a transaction that is rolled back once and committed once.
//
//   node pg_client.mjs DATABASE_URL SCHEMA QUEUE TOPIC EXPECTED_FILE
//
// Appends the records it committed, one "key value" line each, to
// EXPECTED_FILE. Prints PASS or FAIL lines; exits 1 on any failure.
import assert from "node:assert/strict";
import { appendFileSync } from "node:fs";
import pg from "pg";

const [url, schema, queue, topic, expectedPath] = process.argv.slice(2);
const client = new pg.Client({ connectionString: url });
await client.connect();
// The schema is an identifier: quoted by the driver, never spliced raw.
const s = client.escapeIdentifier(schema);
let failures = 0;

async function check(name, fn) {
  try {
    await fn();
    console.log(`PASS node-postgres ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL node-postgres ${name}: ${e.stack || e}`);
  }
}

await check("queue send/receive/ack/nack", async () => {
  await client.query(`SELECT ${s}.send($1, $2::text)`, [queue, "email 1"]);
  await client.query(`SELECT ${s}.send($1, $2::jsonb, priority => 5)`, [queue, JSON.stringify({ to: "a@b" })]);
  const { rows } = await client.query(
    `SELECT id, receipt, convert_from(body, 'UTF8') AS body, attempt
     FROM ${s}.receive($1, max => 10, visibility_timeout => interval '30 s')`,
    [queue],
  );
  assert.deepEqual(rows.map((r) => r.body), ['{"to": "a@b"}', "email 1"]);
  const [json, text] = rows;
  await client.query(`SELECT ${s}.ack($1, $2::text)`, [queue, json.receipt]);
  await client.query(`SELECT ${s}.nack($1, $2::text, delay => interval '0 s', error => $3)`, [
    queue,
    text.receipt,
    "smtp down",
  ]);
  const again = await client.query(
    `SELECT convert_from(body, 'UTF8') AS body, attempt, last_error, receipt FROM ${s}.receive($1)`,
    [queue],
  );
  assert.equal(again.rows.length, 1);
  assert.deepEqual([again.rows[0].body, again.rows[0].attempt, again.rows[0].last_error], ["email 1", 2, "smtp down"]);
  await client.query(`SELECT ${s}.ack($1, $2::text)`, [queue, again.rows[0].receipt]);
  const stats = await client.query(`SELECT ready, in_flight FROM ${s}.stats($1)`, [queue]);
  assert.deepEqual([stats.rows[0].ready, stats.rows[0].in_flight], ["0", "0"]);
});

await check("take in a rolled-back and a committed transaction", async () => {
  await client.query(`SELECT ${s}.send($1, $2::text)`, [queue, "take me"]);
  const take = `SELECT id, convert_from(body, 'UTF8') AS body, attempt FROM ${s}.take($1)`;
  await client.query("BEGIN");
  const first = (await client.query(take, [queue])).rows;
  assert.deepEqual(first.map((r) => [r.body, r.attempt]), [["take me", 1]]);
  await client.query("ROLLBACK");
  await client.query("BEGIN");
  const again = (await client.query(take, [queue])).rows;
  assert.deepEqual(again.map((r) => [r.id, r.body]), [[first[0].id, "take me"]]);
  await client.query("COMMIT");
  assert.equal((await client.query(take, [queue])).rows.length, 0);
  const stats = await client.query(`SELECT ready, in_flight FROM ${s}.stats($1)`, [queue]);
  assert.deepEqual([stats.rows[0].ready, stats.rows[0].in_flight], ["0", "0"]);
});

await check("refusals carry their SQLSTATEs", async () => {
  const cases = [
    [`SELECT ${s}.send($1, 'x')`, ["no-such-queue"], "PB200"],
    [`SELECT ${s}.receive($1, max => 0)`, [queue], "PB100"],
    [`SELECT * FROM ${s}.take($1, max => 0)`, [queue], "PB100"],
    [`SELECT ${s}.ack($1, $2::text)`, [queue, "not a receipt"], "PB100"],
    [`SELECT * FROM ${s}.produce($1, 'v', to_partition => 99)`, [topic], "PB202"],
  ];
  for (const [text, values, code] of cases) {
    await assert.rejects(client.query(text, values), (e) => {
      assert.equal(e.code, code, `${text}: ${e.message}`);
      assert.match(e.message, /^pgbroker: /);
      return true;
    });
  }
});

await check("produce in a rolled-back and a committed transaction", async () => {
  const produce = `SELECT partition, "offset" FROM ${s}.produce($1, key => $2::text, value => $3::text)`;
  await client.query("BEGIN");
  await client.query(produce, [topic, "user-1", "rolled back by node"]);
  await client.query("ROLLBACK");
  const committed = [
    ["user-1", "created by node"],
    ["user-3", "shipped by node"],
  ];
  await client.query("BEGIN");
  for (const [k, v] of committed) {
    const { rows } = await client.query(produce, [topic, k, v]);
    assert.equal(rows.length, 1);
  }
  await client.query("COMMIT");
  for (const [k, v] of committed) appendFileSync(expectedPath, `${k} ${v}\n`);
});

await client.end();
process.exit(failures ? 1 : 0);
