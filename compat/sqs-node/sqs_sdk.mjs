// The AWS SDK for JavaScript v3 (@aws-sdk/client-sqs) against pgbroker's
// SQS-compatible API: a standard queue with a redrive policy and a FIFO
// queue; sends with String, Number and Binary attributes, batch sends, long
// polls, visibility changes, deletes, batch deletes; dead letters and a move
// task that brings them back; FIFO order per group; attributes and counts;
// typed errors.
//
//   SQS_ACCESS_KEY_ID=... SQS_SECRET_ACCESS_KEY=... node sqs_sdk.mjs ENDPOINT
//
// The access key is one of a pgbroker user with every right on queues.
// Prints one PASS/FAIL line per check and a MEASURE line for the long-poll
// wake-up latency (reported, never asserted). Exits 1 if any check failed.

import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  SQSClient,
  CreateQueueCommand,
  GetQueueUrlCommand,
  ListQueuesCommand,
  GetQueueAttributesCommand,
  SendMessageCommand,
  SendMessageBatchCommand,
  ReceiveMessageCommand,
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  ListDeadLetterSourceQueuesCommand,
  StartMessageMoveTaskCommand,
  ListMessageMoveTasksCommand,
  QueueDoesNotExist,
  BatchEntryIdsNotDistinct,
  TooManyEntriesInBatchRequest,
  ReceiptHandleIsInvalid,
  QueueNameExists,
  SQSServiceException,
} from "@aws-sdk/client-sqs";

const failed = [];
function check(what, ok, detail) {
  let line = `${ok ? "PASS" : "FAIL"} ${what}`;
  if (!ok && detail !== undefined) line += ` (${typeof detail === "string" ? detail : JSON.stringify(detail, replacer)})`;
  console.log(line);
  if (!ok) failed.push(line);
}
function replacer(_key, value) {
  return value instanceof Uint8Array ? `bytes:${Buffer.from(value).toString("hex")}` : value;
}

function client(endpoint, accessKeyId, secretAccessKey) {
  return new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId, secretAccessKey },
    maxAttempts: 1,
  });
}

const md5 = (bytes) => createHash("md5").update(bytes).digest("hex");

// MD5OfMessageAttributes as AWS documents it, computed here independently.
function md5OfAttributes(attrs) {
  const parts = [];
  const u32 = (n) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const field = (bytes) => [u32(bytes.length), bytes];
  const names = Object.keys(attrs).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const name of names) {
    const a = attrs[name];
    parts.push(...field(Buffer.from(name)), ...field(Buffer.from(a.DataType)));
    if (a.StringValue !== undefined) parts.push(Buffer.from([1]), ...field(Buffer.from(a.StringValue)));
    else parts.push(Buffer.from([2]), ...field(Buffer.from(a.BinaryValue)));
  }
  return md5(Buffer.concat(parts));
}

function sameAttributes(got, want) {
  if (!got) return false;
  const norm = (attrs) =>
    JSON.stringify(
      Object.keys(attrs)
        .sort()
        .map((k) => [k, attrs[k].DataType, attrs[k].StringValue ?? null,
          attrs[k].BinaryValue ? Buffer.from(attrs[k].BinaryValue).toString("hex") : null]),
    );
  return norm(got) === norm(want);
}

async function errorOf(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  return null;
}

async function receive(c, url, input = {}) {
  const r = await c.send(new ReceiveMessageCommand({ QueueUrl: url, ...input }));
  return r.Messages ?? [];
}

async function attributes(c, url, names) {
  return (await c.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: names }))).Attributes ?? {};
}

async function scenario(c) {
  const p = `js${Date.now() % 1e8}-`;

  // Queues: a dead-letter queue, a source with a redrive policy, a FIFO queue.
  const dlq = (await c.send(new CreateQueueCommand({ QueueName: p + "dlq" }))).QueueUrl;
  check("queue URL ends with the queue name", dlq.endsWith("/" + p + "dlq"), dlq);
  const dlqArn = (await attributes(c, dlq, ["QueueArn"])).QueueArn;
  check("QueueArn reported", typeof dlqArn === "string" && dlqArn.endsWith(":" + p + "dlq"), dlqArn);
  const policy = JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 });
  const work = (await c.send(new CreateQueueCommand({
    QueueName: p + "work",
    Attributes: { RedrivePolicy: policy, VisibilityTimeout: "30" },
  }))).QueueUrl;
  const fifo = (await c.send(new CreateQueueCommand({
    QueueName: p + "ordered.fifo",
    Attributes: { FifoQueue: "true", ContentBasedDeduplication: "true" },
  }))).QueueUrl;
  const byName = (await c.send(new GetQueueUrlCommand({ QueueName: p + "work" }))).QueueUrl;
  check("GetQueueUrl", byName === work, byName);
  const listed = (await c.send(new ListQueuesCommand({ QueueNamePrefix: p }))).QueueUrls ?? [];
  check("ListQueues by prefix", JSON.stringify([...listed].sort()) === JSON.stringify([dlq, work, fifo].sort()), listed);
  const fa = await attributes(c, fifo, ["All"]);
  check("FIFO attributes", fa.FifoQueue === "true" && fa.ContentBasedDeduplication === "true", fa);

  // Send with attributes; the SDK checks MD5OfMessageBody, this script the
  // attributes' digest.
  const attrs = {
    kind: { DataType: "String", StringValue: "greeting" },
    n: { DataType: "Number", StringValue: "42" },
    raw: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 2, 255]) },
  };
  const sent = await c.send(new SendMessageCommand({ QueueUrl: work, MessageBody: "hello", MessageAttributes: attrs }));
  check("SendMessage accepted by the SDK's MD5 check", sent.MD5OfMessageBody === md5("hello"), sent);
  check("MD5OfMessageAttributes", sent.MD5OfMessageAttributes === md5OfAttributes(attrs), sent);
  const batch = await c.send(new SendMessageBatchCommand({
    QueueUrl: work,
    Entries: [0, 1, 2].map((i) => ({
      Id: `b${i}`,
      MessageBody: `batch ${i}`,
      MessageAttributes: { i: { DataType: "Number", StringValue: String(i) } },
    })),
  }));
  check("SendMessageBatch", (batch.Successful ?? []).length === 3 && !(batch.Failed ?? []).length, batch);
  check("SendMessageBatch attribute digests",
    (batch.Successful ?? []).every((s) =>
      s.MD5OfMessageAttributes === md5OfAttributes({ i: { DataType: "Number", StringValue: s.Id.slice(1) } })),
    batch.Successful);

  let a = await attributes(c, work, ["All"]);
  check("4 messages visible", a.ApproximateNumberOfMessages === "4", a);
  check("RedrivePolicy reported", JSON.parse(a.RedrivePolicy ?? "{}").maxReceiveCount === 2, a);
  check("VisibilityTimeout reported", a.VisibilityTimeout === "30", a);

  let got = [];
  for (let i = 0; i < 5 && got.length < 4; i++) {
    got.push(...await receive(c, work, {
      MaxNumberOfMessages: 10, MessageAttributeNames: ["All"], MessageSystemAttributeNames: ["All"],
    }));
  }
  check("received all 4", JSON.stringify(got.map((m) => m.Body).sort()) ===
    JSON.stringify(["batch 0", "batch 1", "batch 2", "hello"]), got.map((m) => m.Body));
  const hello = got.find((m) => m.Body === "hello");
  if (hello) {
    check("received String, Number and Binary attributes", sameAttributes(hello.MessageAttributes, attrs),
      hello.MessageAttributes);
    check("received MD5OfMessageAttributes", hello.MD5OfMessageAttributes === md5OfAttributes(attrs), hello);
    check("ApproximateReceiveCount 1", hello.Attributes?.ApproximateReceiveCount === "1", hello.Attributes);
    check("SentTimestamp", /^\d+$/.test(hello.Attributes?.SentTimestamp ?? ""), hello.Attributes);
    check("ApproximateFirstReceiveTimestamp",
      /^\d+$/.test(hello.Attributes?.ApproximateFirstReceiveTimestamp ?? ""), hello.Attributes);
  }
  a = await attributes(c, work, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]);
  check("4 in flight, none visible",
    a.ApproximateNumberOfMessagesNotVisible === "4" && a.ApproximateNumberOfMessages === "0", a);

  // Change visibility: one back at once, received a second time.
  if (hello) {
    await c.send(new ChangeMessageVisibilityCommand({
      QueueUrl: work, ReceiptHandle: hello.ReceiptHandle, VisibilityTimeout: 0,
    }));
    const again = await receive(c, work, {
      WaitTimeSeconds: 5, MessageSystemAttributeNames: ["ApproximateReceiveCount"],
    });
    check("released message received again, count 2",
      JSON.stringify(again.map((m) => [m.Body, m.Attributes?.ApproximateReceiveCount])) ===
        JSON.stringify([["hello", "2"]]), again);
    got = got.filter((m) => m.Body !== "hello").concat(again);
  }
  if (got.length) {
    await c.send(new DeleteMessageCommand({ QueueUrl: work, ReceiptHandle: got[0].ReceiptHandle }));
    const del = await c.send(new DeleteMessageBatchCommand({
      QueueUrl: work, Entries: got.slice(1).map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle })),
    }));
    check("DeleteMessageBatch", (del.Successful ?? []).length === got.length - 1 && !(del.Failed ?? []).length, del);
  }
  a = await attributes(c, work, ["All"]);
  check("queue empty after deletes",
    a.ApproximateNumberOfMessages === "0" && a.ApproximateNumberOfMessagesNotVisible === "0", a);

  // Long polling: a send wakes a waiting receive. Measured, not asserted.
  const wake = (await c.send(new CreateQueueCommand({ QueueName: p + "wake" }))).QueueUrl;
  const latencies = [];
  for (let i = 0; i < 5; i++) {
    let wokeAt = 0;
    const waiting = receive(c, wake, { WaitTimeSeconds: 10 }).then((ms) => {
      wokeAt = performance.now();
      return ms;
    });
    await sleep(300);
    const sentAt = performance.now();
    await c.send(new SendMessageCommand({ QueueUrl: wake, MessageBody: `wake ${i}` }));
    const ms = await waiting;
    const ok = ms.length === 1 && ms[0].Body === `wake ${i}`;
    check(`long poll ${i} woken by a send`, ok, ms);
    if (ok) {
      latencies.push(wokeAt - sentAt);
      await c.send(new DeleteMessageCommand({ QueueUrl: wake, ReceiptHandle: ms[0].ReceiptHandle }));
    }
  }
  if (latencies.length) {
    const sorted = [...latencies].sort((x, y) => x - y);
    const median = sorted[Math.floor(sorted.length / 2)];
    console.log(`MEASURE send-to-receive wake-up over HTTP, ms: median ${median.toFixed(1)}, ` +
      `max ${sorted[sorted.length - 1].toFixed(1)}, all [${latencies.map((x) => x.toFixed(1)).join(", ")}]`);
  }

  // Dead letters: received maxReceiveCount times, then in the DLQ.
  await c.send(new SendMessageCommand({ QueueUrl: work, MessageBody: "poison" }));
  for (let i = 0; i < 2; i++) {
    const m = await receive(c, work, { WaitTimeSeconds: 5 });
    check(`poison received (${i + 1})`, m.length === 1 && m[0].Body === "poison", m);
    if (m.length) {
      await c.send(new ChangeMessageVisibilityCommand({
        QueueUrl: work, ReceiptHandle: m[0].ReceiptHandle, VisibilityTimeout: 0,
      }));
    }
  }
  const after = await receive(c, work, { WaitTimeSeconds: 1 });
  check("poison no longer in its queue", after.length === 0, after);
  a = await attributes(c, dlq, ["ApproximateNumberOfMessages"]);
  check("poison in the dead-letter queue", a.ApproximateNumberOfMessages === "1", a);
  const sources = await c.send(new ListDeadLetterSourceQueuesCommand({ QueueUrl: dlq }));
  check("ListDeadLetterSourceQueues", JSON.stringify(sources.queueUrls) === JSON.stringify([work]), sources);
  const task = await c.send(new StartMessageMoveTaskCommand({ SourceArn: dlqArn }));
  check("StartMessageMoveTask gives a task handle", typeof task.TaskHandle === "string" && task.TaskHandle, task);
  let status = {};
  for (let i = 0; i < 100; i++) {
    status = (await c.send(new ListMessageMoveTasksCommand({ SourceArn: dlqArn }))).Results?.[0] ?? {};
    if (status.Status !== "RUNNING") break;
    await sleep(50);
  }
  check("move task completed", status.Status === "COMPLETED", status);
  const back = await receive(c, work, { WaitTimeSeconds: 5 });
  check("move task brought the message back", back.length === 1 && back[0].Body === "poison", back);
  for (const m of back) await c.send(new DeleteMessageCommand({ QueueUrl: work, ReceiptHandle: m.ReceiptHandle }));
  a = await attributes(c, dlq, ["ApproximateNumberOfMessages"]);
  check("dead-letter queue empty after the move", a.ApproximateNumberOfMessages === "0", a);

  // FIFO: two groups interleaved, each delivered in its own order.
  const sends = [["g1", "g1-1"], ["g2", "g2-1"], ["g1", "g1-2"], ["g2", "g2-2"], ["g1", "g1-3"], ["g2", "g2-3"]];
  for (const [g, body] of sends) {
    const r = await c.send(new SendMessageCommand({ QueueUrl: fifo, MessageBody: body, MessageGroupId: g }));
    if (!r.SequenceNumber) check(`FIFO send ${body} has a SequenceNumber`, false, r);
  }
  await c.send(new SendMessageCommand({ QueueUrl: fifo, MessageBody: "g1-1", MessageGroupId: "g1" }));
  a = await attributes(c, fifo, ["ApproximateNumberOfMessages"]);
  check("content-based duplicate is not sent again", a.ApproximateNumberOfMessages === "6", a);
  const order = { g1: [], g2: [] };
  for (let i = 0; i < 20 && order.g1.length + order.g2.length < 6; i++) {
    const ms = await receive(c, fifo, { MaxNumberOfMessages: 10, MessageSystemAttributeNames: ["MessageGroupId"] });
    for (const m of ms) {
      (order[m.Attributes?.MessageGroupId] ??= []).push(m.Body);
      await c.send(new DeleteMessageCommand({ QueueUrl: fifo, ReceiptHandle: m.ReceiptHandle }));
    }
  }
  check("FIFO order per group",
    JSON.stringify(order) === JSON.stringify({ g1: ["g1-1", "g1-2", "g1-3"], g2: ["g2-1", "g2-2", "g2-3"] }), order);

  // Typed errors, as the SDK's exception classes.
  let e = await errorOf(c.send(new GetQueueUrlCommand({ QueueName: p + "missing" })));
  check("QueueDoesNotExist raised", e instanceof QueueDoesNotExist, e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new SendMessageCommand({ QueueUrl: work.replace(/work$/, "missing"), MessageBody: "x" })));
  check("QueueDoesNotExist raised by SendMessage", e instanceof QueueDoesNotExist, e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new SendMessageBatchCommand({
    QueueUrl: work, Entries: [{ Id: "a", MessageBody: "x" }, { Id: "a", MessageBody: "y" }],
  })));
  check("BatchEntryIdsNotDistinct raised", e instanceof BatchEntryIdsNotDistinct, e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new SendMessageBatchCommand({
    QueueUrl: work, Entries: Array.from({ length: 11 }, (_, i) => ({ Id: `e${i}`, MessageBody: "x" })),
  })));
  check("TooManyEntriesInBatchRequest raised", e instanceof TooManyEntriesInBatchRequest,
    e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new DeleteMessageCommand({ QueueUrl: work, ReceiptHandle: "not-a-handle" })));
  check("ReceiptHandleIsInvalid raised", e instanceof ReceiptHandleIsInvalid, e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new CreateQueueCommand({ QueueName: p + "work", Attributes: { VisibilityTimeout: "99" } })));
  check("QueueNameExists raised", e instanceof QueueNameExists, e && `${e.name}: ${e.message}`);
  e = await errorOf(c.send(new ReceiveMessageCommand({ QueueUrl: work, WaitTimeSeconds: 21 })));
  check("WaitTimeSeconds 21 refused with InvalidParameterValue",
    e instanceof SQSServiceException && e.name === "InvalidParameterValue", e && `${e.name}: ${e.message}`);
  a = await attributes(c, work, ["All"]);
  check("errors changed nothing", a.ApproximateNumberOfMessages === "0" && a.VisibilityTimeout === "30", a);

  for (const url of [work, dlq, fifo, wake]) await c.send(new DeleteQueueCommand({ QueueUrl: url }));
  e = await errorOf(c.send(new GetQueueUrlCommand({ QueueName: p + "work" })));
  check("deleted queue is gone", e instanceof QueueDoesNotExist, e && `${e.name}: ${e.message}`);
}

async function main() {
  const endpoint = process.argv[2];
  const key = process.env.SQS_ACCESS_KEY_ID;
  const secret = process.env.SQS_SECRET_ACCESS_KEY;
  let e = await errorOf(client(endpoint, key, secret + "x").send(new ListQueuesCommand({})));
  check("a wrong secret is refused", e?.name === "SignatureDoesNotMatch", e && `${e.name}: ${e.message}`);
  e = await errorOf(client(endpoint, "PGBKNOSUCHKEY0000000", secret).send(new ListQueuesCommand({})));
  check("an unknown access key is refused", e?.name === "InvalidClientTokenId", e && `${e.name}: ${e.message}`);
  try {
    await scenario(client(endpoint, key, secret));
  } catch (err) {
    check("scenario ran to the end", false, `${err?.name}: ${err?.message}`);
    console.error(err);
  }
  if (failed.length) {
    console.log(`${failed.length} check(s) failed`);
    process.exit(1);
  }
}

await main();
