"""Client processes of the fault scenarios; each appends its history to a
JSON-lines file (see checker.py for the events).

  clients.py producer BOOTSTRAP TOPIC NAME OUT RATE
  clients.py consumer BOOTSTRAP TOPIC GROUP SESSION OUT
  clients.py scan     BOOTSTRAP TOPIC OUT
  clients.py qworker  BIN DATABASE_URL QUEUE NAME OUT
  clients.py metadata TOPIC BOOTSTRAP...

producer and consumer run until SIGTERM; the producer then waits for every
outstanding delivery report."""

import json
import os
import signal
import subprocess
import sys
import time

stopping = False


def on_term(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)


class History:
    def __init__(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, **event):
        event["t"] = time.time()
        self.f.write(json.dumps(event) + "\n")


def producer(bootstrap, topic, name, out, rate):
    from confluent_kafka import KafkaException, Producer

    h = History(out)
    fatal = []

    def on_error(err):
        h.write(op="client_error", who=name, error=str(err), fatal=err.fatal())
        if err.fatal():
            fatal.append(str(err))

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 300000,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 1000,
        "error_cb": on_error,
    })

    def delivered(err, msg):
        v = msg.value().decode()
        if err is None:
            h.write(op="ack", value=v, ok=True, partition=msg.partition(), offset=msg.offset())
        else:
            h.write(op="ack", value=v, ok=False, error=str(err))

    interval = 1.0 / rate
    seq = 0
    next_at = time.monotonic()
    while not stopping and not fatal:
        v = f"{name}-{seq}"
        h.write(op="send", value=v, producer=name, seq=seq)
        while True:
            try:
                p.produce(topic, value=v.encode(), key=str(seq % 101).encode(), on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
            except KafkaException as e:  # the client refuses new messages: record why, and stop
                h.write(op="client_error", who=name, error=str(e), fatal=True)
                fatal.append(str(e))
                break
        seq += 1
        p.poll(0)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    left = p.flush(300)
    h.write(op="producer_done", who=name, undelivered=left, fatal=fatal)
    return 1 if left or fatal else 0


def consumer(bootstrap, topic, group, session, out):
    from confluent_kafka import Consumer, KafkaException

    h = History(out)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "error_cb": lambda err: h.write(op="client_error", who=session, error=str(err), fatal=err.fatal()),
    })

    def assigned(_, parts):
        h.write(op="assign", reader=group, session=session, partitions=[tp.partition for tp in parts])

    c.subscribe([topic], on_assign=assigned)
    while not stopping:
        msgs = c.consume(200, 0.5)
        for m in msgs:
            if m.error():
                continue
            h.write(op="read", reader=group, session=session, value=m.value().decode(), partition=m.partition(),
                    offset=m.offset())
        if msgs:
            time.sleep(0.1)  # processing: a kill may land between the reads and the commit
            try:
                c.commit(asynchronous=False)
                h.write(op="commit", session=session)
            except KafkaException as e:
                h.write(op="commit_failed", session=session, error=str(e))
    c.close()
    return 0


def scan(bootstrap, topic, out):
    """Reads every partition from its start to its high watermark.

    Like any reader, it retries a failed metadata or watermark request
    (recorded as a client error, printed to its log) until its deadline."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING

    h = History(out)
    deadline = time.monotonic() + 120

    def error(e):
        print("scan:", e, file=sys.stderr, flush=True)
        fatal = getattr(e, "fatal", None)
        h.write(op="client_error", who="scan", error=str(e), fatal=bool(fatal()) if callable(fatal) else False)

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "scan", "enable.auto.commit": False,
                  "error_cb": error})
    while True:
        try:
            parts = c.list_topics(topic, timeout=30).topics[topic].partitions
            ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
            if ends:
                break
            error(f"no partitions in the metadata of {topic}")
        except KafkaException as e:
            error(e)
        if time.monotonic() > deadline:
            print("scan: no watermarks after 120s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    h.write(op="assign", reader="scan", session="scan", partitions=sorted(ends))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    pos = {p: -1 for p in ends}
    while any(pos[p] + 1 < ends[p] for p in ends):
        if time.monotonic() > deadline:
            print("scan: not at the end after 120s:", pos, ends, file=sys.stderr)
            return 1
        for m in c.consume(500, 1.0):
            if m.error():
                error(m.error())
                continue
            pos[m.partition()] = m.offset()
            h.write(op="read", reader="scan", session="scan", value=m.value().decode(), partition=m.partition(),
                    offset=m.offset())
    c.close()
    return 0


def metadata(topic, *bootstraps):
    """Prints, for each broker in turn, one JSON line with what its Metadata
    answer says: brokers by node id as [host, port], and the leader of
    each partition of `topic`; or null when it did not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    for bootstrap in bootstraps:
        try:
            md = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000}).list_topics(topic, timeout=3)
            t = md.topics.get(topic)
            ok = t is not None and t.error is None
            answer = {"brokers": {n: [b.host, b.port] for n, b in md.brokers.items()},
                      "leaders": {p: part.leader for p, part in t.partitions.items()}} if ok else None
        except KafkaException:
            answer = None
        print(json.dumps(answer), flush=True)
    return 0


def qworker(binary, url, queue, name, out):
    """Receives with the CLI, works a little, acknowledges; nacks poison.

    Like a real worker it rides out a database outage: a failed receive is
    tried again after a pause, and a failed ack or nack is retried while
    the lease lasts (after that the message comes back anyway). A settle
    refused for a stale receipt is not retried: the lease is gone."""
    h = History(out)
    base = [binary, "--database-url", url, "queue"]

    def cli(args):
        try:
            return subprocess.run(base + args, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, "", f"timed out after {e.timeout}s")

    def settle(op, receipts, lease_ends, args):
        pause = 0.1
        while True:
            if op == "qnack":
                h.write(op="qnack_start", worker=name, receipts=receipts)  # a kill from here on: outcome unknown
            r = cli([op[1:], queue, *receipts] + args)
            h.write(op=op, worker=name, receipts=receipts, ok=r.returncode == 0, error=r.stderr.strip())
            stale = "receipt no longer valid" in r.stderr
            if r.returncode == 0 or stale or stopping or time.time() + pause >= lease_ends:
                return
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    pause = 0.1
    while not stopping:
        r = cli(["receive", queue, "--max", "5", "--wait", "1s", "--format", "json"])
        if r.returncode != 0:
            h.write(op="cli_error", who=name, error=r.stderr.strip())
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            continue
        pause = 0.1
        ok, poison = [], []
        lease_ends = float("inf")
        for line in r.stdout.splitlines():
            m = json.loads(line)
            h.write(op="qrecv", worker=name, value=m["body"], id=m["id"], receipt=m["receipt"], attempt=m["attempt"],
                    lease_expires=m["lease_expires_at"])
            (poison if m["body"].startswith("poison") else ok).append(m["receipt"])
            lease_ends = min(lease_ends, m["lease_expires_at"] / 1000)
        if poison:
            settle("qnack", poison, lease_ends, ["--delay", "0s"])
        if ok:
            time.sleep(0.05)  # the work
            settle("qack", ok, lease_ends, [])
    return 0


def main(argv):
    role, args = argv[1], argv[2:]
    if role == "producer":
        return producer(args[0], args[1], args[2], args[3], float(args[4]))
    if role == "consumer":
        return consumer(*args[:5])
    if role == "scan":
        return scan(*args[:3])
    if role == "qworker":
        return qworker(*args[:5])
    if role == "metadata":
        return metadata(*args)
    print("unknown role", role, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
