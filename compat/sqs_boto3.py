"""boto3 against pgbroker's SQS-compatible API, and the same scenario against
moto as a reference: queues with a redrive policy and FIFO, sends, batch
sends, long polls, visibility changes, deletes, dead letters and their move
back, FIFO order per group (several messages of a group in one receive,
with their sequence numbers and deduplication ids), attributes and counts,
typed errors. Then the response shapes of both servers are compared action
by action.

    SQS_ACCESS_KEY_ID=... SQS_SECRET_ACCESS_KEY=... sqs_boto3.py PGBROKER_ENDPOINT MOTO_ENDPOINT [METRICS_URL]

The access key is one of a pgbroker user with every right on queues.

Prints one PASS/FAIL line per check (NOTE where moto deviates), MEASURE
lines for the long-poll wake-up latency (reported, never asserted) and DIFF
lines for shape differences. Exits 1 if any check of pgbroker failed.
"""

import hashlib
import json
import os
import statistics
import struct
import sys
import threading
import time
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

FAILED = []


def check(server, what, ok, detail=""):
    """A check of pgbroker fails the run; moto, the reference, only gets
    its deviations noted."""
    verdict = "PASS" if ok else ("FAIL" if server == "pgbroker" else "NOTE")
    line = f"{verdict} {server}: {what}"
    if not ok and detail:
        line += f" ({detail})"
    print(line, flush=True)
    if verdict == "FAIL":
        FAILED.append(line)


def client(endpoint, key="test", secret="test"):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=60),
    )


def md5_of_attributes(attrs):
    """MD5OfMessageAttributes as AWS documents it, computed independently."""
    out = b""
    for name in sorted(attrs, key=lambda n: n.encode()):
        a = attrs[name]
        out += struct.pack(">I", len(name.encode())) + name.encode()
        out += struct.pack(">I", len(a["DataType"].encode())) + a["DataType"].encode()
        if "StringValue" in a:
            v = a["StringValue"].encode()
            out += b"\x01" + struct.pack(">I", len(v)) + v
        else:
            v = a["BinaryValue"]
            out += b"\x02" + struct.pack(">I", len(v)) + v
    return hashlib.md5(out).hexdigest()


def shape(value):
    """The structure of a response: keys and value types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"].get("QueryErrorCode") or e.response["Error"]["Code"], e
    return None, None


def receive_all(c, url, **kw):
    return c.receive_message(QueueUrl=url, **kw).get("Messages", [])


def scenario(name, c, is_pgbroker):
    shapes = {}
    p = "s" + str(int(time.time() * 1000) % 10**8) + "-"

    # Queues: a dead-letter queue, a source with a redrive policy, a FIFO queue.
    r = c.create_queue(QueueName=p + "dlq")
    shapes["CreateQueue"] = shape(r)
    dlq = r["QueueUrl"]
    check(name, "queue URL ends with the queue name", dlq.endswith("/" + p + "dlq"), dlq)
    dlq_arn = c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    work = c.create_queue(QueueName=p + "work", Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    fifo = c.create_queue(
        QueueName=p + "ordered.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    r = c.get_queue_url(QueueName=p + "work")
    shapes["GetQueueUrl"] = shape(r)
    check(name, "GetQueueUrl", r["QueueUrl"] == work, r["QueueUrl"])
    r = c.list_queues(QueueNamePrefix=p)
    shapes["ListQueues"] = shape(r)
    check(name, "ListQueues by prefix", sorted(r["QueueUrls"]) == sorted([dlq, work, fifo]), r["QueueUrls"])

    # Send, with attributes whose digest the client can check.
    attrs = {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "n": {"DataType": "Number", "StringValue": "42"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},
    }
    r = c.send_message(QueueUrl=work, MessageBody="hello", MessageAttributes=attrs)
    shapes["SendMessage"] = shape(r)
    check(name, "MD5OfMessageBody", r["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest())
    check(name, "MD5OfMessageAttributes", r.get("MD5OfMessageAttributes") == md5_of_attributes(attrs), r)
    r = c.send_message_batch(
        QueueUrl=work, Entries=[{"Id": f"b{i}", "MessageBody": f"batch {i}"} for i in range(3)]
    )
    shapes["SendMessageBatch"] = shape(r)
    check(name, "SendMessageBatch", len(r.get("Successful", [])) == 3 and not r.get("Failed"), r)

    a = c.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
    check(name, "4 messages visible", a.get("ApproximateNumberOfMessages") == "4", a)
    check(name, "RedrivePolicy reported", json.loads(a.get("RedrivePolicy", "{}")).get("maxReceiveCount") == 2, a)
    shapes["GetQueueAttributes"] = sorted(a.keys())

    got = []
    for _ in range(5):
        got += receive_all(
            c, work, MaxNumberOfMessages=10, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
        )
        if len(got) >= 4:
            break
    check(name, "received all 4", sorted(m["Body"] for m in got) == ["batch 0", "batch 1", "batch 2", "hello"])
    if got:
        shapes["ReceiveMessage"] = shape({"Messages": [max(got, key=lambda m: len(m))]})
    hello = next((m for m in got if m["Body"] == "hello"), None)
    if hello:
        check(name, "received attributes", hello.get("MessageAttributes") == attrs, hello.get("MessageAttributes"))
        check(name, "received MD5OfMessageAttributes", hello.get("MD5OfMessageAttributes") == md5_of_attributes(attrs))
        check(name, "ApproximateReceiveCount 1", hello["Attributes"].get("ApproximateReceiveCount") == "1")
        check(name, "SentTimestamp", hello["Attributes"].get("SentTimestamp", "").isdigit())
        check(name, "ApproximateFirstReceiveTimestamp",
              hello["Attributes"].get("ApproximateFirstReceiveTimestamp", "").isdigit())
    a = c.get_queue_attributes(QueueUrl=work, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    check(name, "4 in flight", a.get("ApproximateNumberOfMessagesNotVisible") == "4", a)

    # Change visibility: one back at once, received a second time.
    if hello:
        c.change_message_visibility(QueueUrl=work, ReceiptHandle=hello["ReceiptHandle"], VisibilityTimeout=0)
        again = receive_all(c, work, WaitTimeSeconds=5, MessageSystemAttributeNames=["ApproximateReceiveCount"])
        check(name, "released message received again",
              [m["Attributes"]["ApproximateReceiveCount"] for m in again] == ["2"], again)
        got = [m for m in got if m["Body"] != "hello"] + again
    c.delete_message(QueueUrl=work, ReceiptHandle=got[0]["ReceiptHandle"])
    r = c.delete_message_batch(
        QueueUrl=work, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got[1:])]
    )
    shapes["DeleteMessageBatch"] = shape(r)
    check(name, "DeleteMessageBatch", len(r.get("Successful", [])) == len(got) - 1 and not r.get("Failed"), r)
    a = c.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
    check(name, "queue empty after deletes",
          (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0"), a)

    # Long polling: a send wakes a waiting receive. Measured, not asserted.
    wake = c.create_queue(QueueName=p + "wake")["QueueUrl"]
    latencies = []
    for i in range(5):
        box = {}

        def waiter():
            box["m"] = receive_all(c, wake, WaitTimeSeconds=10)
            box["t"] = time.monotonic()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        sent_at = time.monotonic()
        c.send_message(QueueUrl=wake, MessageBody=f"wake {i}")
        t.join()
        ok = [m["Body"] for m in box["m"]] == [f"wake {i}"]
        check(name, f"long poll {i} woken by a send", ok, box["m"])
        if ok:
            latencies.append((box["t"] - sent_at) * 1000)
            c.delete_message(QueueUrl=wake, ReceiptHandle=box["m"][0]["ReceiptHandle"])
    if latencies:
        print(f"MEASURE {name}: send-to-receive wake-up over HTTP, ms: median {statistics.median(latencies):.1f}, "
              f"max {max(latencies):.1f}, all {[round(x, 1) for x in latencies]}", flush=True)

    # Dead letters: received maxReceiveCount times, then in the DLQ.
    c.send_message(QueueUrl=work, MessageBody="poison")
    for _ in range(2):
        m = receive_all(c, work, WaitTimeSeconds=5)
        check(name, "poison received", [x["Body"] for x in m] == ["poison"], m)
        if m:
            c.change_message_visibility(QueueUrl=work, ReceiptHandle=m[0]["ReceiptHandle"], VisibilityTimeout=0)
    check(name, "poison no longer in its queue", receive_all(c, work, WaitTimeSeconds=1) == [])
    a = c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    check(name, "poison in the dead-letter queue", a.get("ApproximateNumberOfMessages") == "1", a)
    r = c.list_dead_letter_source_queues(QueueUrl=dlq)
    shapes["ListDeadLetterSourceQueues"] = shape(r)
    check(name, "ListDeadLetterSourceQueues", r.get("queueUrls") == [work], r)
    try:
        task = c.start_message_move_task(SourceArn=dlq_arn)
        shapes["StartMessageMoveTask"] = shape(task)
        status = {}
        for _ in range(100):
            status = c.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
            if status["Status"] != "RUNNING":
                break
            time.sleep(0.05)
        check(name, "move task completed", status.get("Status") == "COMPLETED", status)
        back = receive_all(c, work, WaitTimeSeconds=5)
        check(name, "move task brought the message back", [m["Body"] for m in back] == ["poison"], back)
        for m in back:
            c.delete_message(QueueUrl=work, ReceiptHandle=m["ReceiptHandle"])
    except ClientError as e:
        if is_pgbroker:
            check(name, "StartMessageMoveTask", False, e)
        else:
            print(f"INFO {name}: StartMessageMoveTask not supported: {e.response['Error'].get('Code')}", flush=True)

    # FIFO: two groups interleaved, each delivered in its own order.
    sends = [("g1", "g1-1"), ("g2", "g2-1"), ("g1", "g1-2"), ("g2", "g2-2"), ("g1", "g1-3"), ("g2", "g2-3")]
    for g, body in sends:
        c.send_message(QueueUrl=fifo, MessageBody=body, MessageGroupId=g)
    dup = c.send_message(QueueUrl=fifo, MessageBody="g1-1", MessageGroupId="g1")
    check(name, "content-based duplicate is not sent again",
          c.get_queue_attributes(QueueUrl=fifo, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
          ["ApproximateNumberOfMessages"] == "6", dup)
    order = {"g1": [], "g2": []}
    for _ in range(20):
        ms = receive_all(c, fifo, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"])
        for m in ms:
            order[m["Attributes"]["MessageGroupId"]].append(m["Body"])
            c.delete_message(QueueUrl=fifo, ReceiptHandle=m["ReceiptHandle"])
        if len(order["g1"]) + len(order["g2"]) >= 6:
            break
    check(name, "FIFO order per group",
          order == {"g1": ["g1-1", "g1-2", "g1-3"], "g2": ["g2-1", "g2-2", "g2-3"]}, order)

    # FIFO: one receive returns several messages of a group, in order, with
    # the SequenceNumber of their sends and their MessageDeduplicationId.
    sent = [c.send_message(QueueUrl=fifo, MessageBody=f"x-{i}", MessageGroupId="gx",
                           MessageDeduplicationId=f"dx-{i}") for i in range(3)]
    shapes["SendMessage (FIFO)"] = shape(sent[0])
    ms = receive_all(c, fifo, MaxNumberOfMessages=10, AttributeNames=["All"])
    check(name, "FIFO: one receive returns a group's messages in order",
          [m["Body"] for m in ms] == ["x-0", "x-1", "x-2"], [m["Body"] for m in ms])
    check(name, "FIFO: SequenceNumber and MessageDeduplicationId as sent",
          [(m["Attributes"].get("SequenceNumber"), m["Attributes"].get("MessageDeduplicationId")) for m in ms]
          == [(r.get("SequenceNumber"), f"dx-{i}") for i, r in enumerate(sent)],
          [(m["Attributes"], r.get("SequenceNumber")) for m, r in zip(ms, sent)])
    if ms:
        shapes["ReceiveMessage (FIFO)"] = shape({"Messages": ms[:1]})
    check(name, "FIFO: the group is held while its messages are in flight",
          receive_all(c, fifo, MaxNumberOfMessages=10) == [])
    for m in ms:
        c.delete_message(QueueUrl=fifo, ReceiptHandle=m["ReceiptHandle"])

    # Typed errors.
    code, e = error_code(lambda: c.get_queue_url(QueueName=p + "missing"))
    check(name, "QueueDoesNotExist raised", isinstance(e, c.exceptions.QueueDoesNotExist), code)
    code, e = error_code(lambda: c.send_message_batch(
        QueueUrl=work, Entries=[{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}]))
    check(name, "BatchEntryIdsNotDistinct raised", isinstance(e, c.exceptions.BatchEntryIdsNotDistinct), code)
    code, e = error_code(lambda: c.send_message_batch(
        QueueUrl=work, Entries=[{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]))
    check(name, "TooManyEntriesInBatchRequest raised",
          isinstance(e, c.exceptions.TooManyEntriesInBatchRequest), code)
    code, e = error_code(lambda: c.delete_message(QueueUrl=work, ReceiptHandle="not-a-handle"))
    check(name, "ReceiptHandleIsInvalid raised", isinstance(e, c.exceptions.ReceiptHandleIsInvalid), code)
    code, e = error_code(lambda: c.create_queue(QueueName=p + "work", Attributes={"VisibilityTimeout": "99"}))
    check(name, "QueueNameExists raised", isinstance(e, c.exceptions.QueueNameExists), code)
    code, _ = error_code(lambda: c.receive_message(QueueUrl=work, WaitTimeSeconds=21))
    check(name, "WaitTimeSeconds 21 refused", code == "InvalidParameterValue", code)
    a = c.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
    check(name, "errors changed nothing", a["ApproximateNumberOfMessages"] == "0", a)

    for url in (work, dlq, fifo, wake):
        c.delete_queue(QueueUrl=url)
    return shapes


def main():
    pgbroker_url, moto_url = sys.argv[1], sys.argv[2]
    key, secret = os.environ["SQS_ACCESS_KEY_ID"], os.environ["SQS_SECRET_ACCESS_KEY"]
    code, _ = error_code(lambda: client(pgbroker_url, key, secret + "x").list_queues())
    check("pgbroker", "a wrong secret is refused", code == "SignatureDoesNotMatch", code)
    code, _ = error_code(lambda: client(pgbroker_url, "PGBKNOSUCHKEY0000000", secret).list_queues())
    check("pgbroker", "an unknown access key is refused", code == "InvalidClientTokenId", code)
    ours = scenario("pgbroker", client(pgbroker_url, key, secret), True)
    if len(sys.argv) > 3:
        metrics = urllib.request.urlopen(sys.argv[3], timeout=10).read().decode()
        for series in ('pgbroker_sqs_requests_total{action="SendMessage"}',
                       'pgbroker_sqs_requests_total{action="ReceiveMessage"}',
                       'pgbroker_sqs_errors_total{action="GetQueueUrl",code="QueueDoesNotExist"}'):
            line = next((l for l in metrics.splitlines() if l.startswith(series + " ")), "")
            check("pgbroker", f"/metrics counts {series}", line and float(line.split()[-1]) >= 1, line)
    theirs = scenario("moto", client(moto_url), False)
    for action in sorted(set(ours) & set(theirs)):
        if ours[action] == theirs[action]:
            print(f"SAME {action}: response shapes match", flush=True)
        else:
            print(f"DIFF {action}: pgbroker {json.dumps(ours[action], sort_keys=True)}"
                  f" | moto {json.dumps(theirs[action], sort_keys=True)}", flush=True)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
