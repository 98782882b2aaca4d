"""Client processes of the transactional fault scenarios (confluent-kafka
from compat/.venv, which bundles a recent librdkafka). Each appends its
history to a JSON-lines file; txn_checker.py describes the events.

  txn_clients.py fill    BOOTSTRAP TOPIC COUNT OUT
  txn_clients.py worker  BOOTSTRAP INPUT OUTPUT GROUP NAME OUT ABORT_EVERY RATE
  txn_clients.py reader  BOOTSTRAP TOPIC NAME ISOLATION OUT [--until-end]

fill writes COUNT numbered input records (i-0, i-1, ...) and exits.
A worker consumes the input in a consumer group (read_committed) and, for
each batch, runs one transaction: two output records per input record,
keyed so that they spread over the output partitions, and the input
offsets sent to the transaction; it commits, or aborts one transaction
in ABORT_EVERY on purpose (and processes that batch again). A reader
assigns itself every partition of a topic from the beginning and records
what it reads, until SIGTERM (or, with --until-end, at once); it then
reads up to the end of every partition."""

import json
import os
import signal
import sys
import time

stopping = False
# librdkafka's debug contexts for the workers' producers, to see why one hangs.
DEBUG = {"debug": os.environ["FAULTS_RDKAFKA_DEBUG"]} if os.environ.get("FAULTS_RDKAFKA_DEBUG") else {}


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


def fill(bootstrap, topic, count, out):
    from confluent_kafka import Producer

    h = History(out)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})

    def delivered(err, msg):
        if err is None:
            h.write(op="input", value=msg.value().decode(), partition=msg.partition(), offset=msg.offset())
        else:
            h.write(op="client_error", who="fill", error=str(err), fatal=True)

    for n in range(count):
        while True:
            try:
                p.produce(topic, value=f"i-{n}".encode(), key=str(n).encode(), on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    return 1 if p.flush(120) else 0


class Worker:
    """One consume-transform-produce worker. Its transactional id is its
    name: a new producer (after a fatal error) fences the old one."""

    def __init__(self, bootstrap, inp, outp, group, name, h, abort_every, rate):
        self.bootstrap, self.inp, self.outp, self.group, self.name = bootstrap, inp, outp, group, name
        self.h, self.abort_every, self.rate = h, abort_every, rate
        self.incarnation = 0
        self.count = 0
        self.consumer = self.producer = None

    def errors(self, err):
        self.h.write(op="client_error", who=self.name, error=str(err), fatal=err.fatal())

    def start(self):
        from confluent_kafka import Consumer, Producer

        self.incarnation += 1
        if self.consumer is None:
            self.consumer = Consumer({
                "bootstrap.servers": self.bootstrap, "group.id": self.group, "isolation.level": "read_committed",
                "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500, "error_cb": self.errors,
            })
            self.consumer.subscribe([self.inp], on_assign=self.assigned)
        self.producer = Producer({
            "bootstrap.servers": self.bootstrap, "transactional.id": f"txn-{self.name}",
            "transaction.timeout.ms": 20000, "message.timeout.ms": 20000, "linger.ms": 5,
            "socket.timeout.ms": 10000, "reconnect.backoff.max.ms": 1000, "error_cb": self.errors,
            # With its only broker down, librdkafka 2.16 re-bootstraps by default
            # and forgets its broker handles; a send_offsets_to_transaction then
            # in flight waits forever for a group coordinator it never asks for.
            "metadata.recovery.strategy": "none",
            **DEBUG,
        })
        self.retrying("init_transactions", lambda: self.producer.init_transactions(30))
        self.h.write(op="worker_start", worker=self.name, incarnation=self.incarnation)

    def assigned(self, _, parts):
        self.h.write(op="worker_assign", worker=self.name, partitions=[tp.partition for tp in parts])

    def retrying(self, what, call):
        """Retries a transactional call while its error is retriable, as the
        client's documentation asks; other errors are raised."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + 120
        while True:
            try:
                return call()
            except KafkaException as e:
                err = e.args[0]
                if not err.retriable() or time.monotonic() > deadline or err.fatal() or err.txn_requires_abort():
                    raise
                self.h.write(op="retry", worker=self.name, call=what, error=str(err))
                time.sleep(0.2)

    def rewind(self):
        """After an abort the consumer goes back to the committed offsets,
        so that the batch is processed again."""
        from confluent_kafka import OFFSET_BEGINNING

        parts = self.consumer.assignment()
        if not parts:
            return
        committed = self.retrying("committed", lambda: self.consumer.committed(parts, timeout=30))
        for tp in committed:
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            self.consumer.seek(tp)

    def run_batch(self, msgs):
        from confluent_kafka import KafkaException

        self.count += 1
        txn = f"{self.name}.{self.incarnation}.{self.count}"
        inputs = [(m.value().decode(), m.partition(), m.offset()) for m in msgs]
        outputs = [f"{txn}:{v}:{j}" for v, _, _ in inputs for j in (0, 1)]
        # Every tenth transaction of a worker (from its third) is aborted on purpose.
        deliberate = self.abort_every > 0 and self.count % self.abort_every == 3 % self.abort_every
        self.h.write(op="txn_begin", worker=self.name, txn=txn, inputs=[v for v, _, _ in inputs],
                     input_positions=[[p, o] for _, p, o in inputs], outputs=outputs)
        stage = "begin"
        try:
            self.producer.begin_transaction()
            stage = "produce"
            for out in outputs:
                inp, j = out.split(":")[1], out.rsplit(":", 1)[1]
                while True:
                    try:
                        self.producer.produce(self.outp, value=out.encode(), key=f"{inp}/{j}".encode())
                        break
                    except BufferError:
                        self.producer.poll(0.1)
            stage = "offsets"
            positions = self.consumer.position(self.consumer.assignment())
            self.retrying("send_offsets_to_transaction", lambda: self.producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 30))
            if deliberate:
                stage = "abort"
                self.retrying("abort_transaction", lambda: self.producer.abort_transaction(30))
                self.h.write(op="txn_end", worker=self.name, txn=txn, outcome="aborted", deliberate=True)
                self.rewind()
                return
            stage = "commit"
            self.retrying("commit_transaction", lambda: self.producer.commit_transaction(30))
            self.h.write(op="txn_end", worker=self.name, txn=txn, outcome="committed")
        except KafkaException as e:
            err = e.args[0]
            self.h.write(op="txn_error", worker=self.name, txn=txn, stage=stage, error=str(err), fatal=err.fatal(),
                         abortable=err.txn_requires_abort())
            if err.txn_requires_abort() and not err.fatal():
                try:
                    self.retrying("abort_transaction", lambda: self.producer.abort_transaction(30))
                    self.h.write(op="txn_end", worker=self.name, txn=txn, outcome="aborted", deliberate=False)
                except KafkaException as e2:  # the outcome stays unknown; a new producer fences it
                    self.h.write(op="txn_error", worker=self.name, txn=txn, stage="abort", error=str(e2.args[0]),
                                 fatal=e2.args[0].fatal(), abortable=False)
                    self.restart()
            else:
                # A commit whose outcome is unknown, or a fatal error: a new
                # producer with the same transactional id fences this one and
                # aborts whatever it left open.
                self.restart()
            self.rewind()

    def restart(self):
        try:
            self.producer.flush(0)
        except Exception:  # the old producer is being thrown away
            pass
        self.producer = None
        self.start()

    def run(self):
        interval_per_record = 1.0 / self.rate
        self.start()
        while not stopping:
            msgs = [m for m in self.consumer.consume(20, 0.5) if not m.error()]
            if not msgs:
                continue
            started = time.monotonic()
            self.run_batch(msgs)
            pause = len(msgs) * interval_per_record - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
        self.consumer.close()
        self.h.write(op="worker_done", worker=self.name)
        return 0


def worker(bootstrap, inp, outp, group, name, out, abort_every, rate):
    h = History(out)
    w = Worker(bootstrap, inp, outp, group, name, h, int(abort_every), float(rate))
    try:
        return w.run()
    except Exception as e:  # recorded for the checker's report; the scenario restarts nothing
        h.write(op="client_error", who=name, error=repr(e), fatal=True)
        raise


def reader(bootstrap, topic, name, isolation, out, until_end=False):
    """Records every record read, then reads to the end of each partition.

    The end of a partition is its high watermark, reached when the
    consumer's position (which moves past control records) gets there."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING

    h = History(out)
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"reader-{name}", "enable.auto.commit": False,
        "isolation.level": isolation,
        "error_cb": lambda err: h.write(op="client_error", who=name, error=str(err), fatal=err.fatal()),
    })
    deadline = time.monotonic() + 120
    while True:
        try:
            parts = sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)
            if parts:
                break
        except KafkaException as e:
            h.write(op="client_error", who=name, error=str(e), fatal=False)
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.5)
    h.write(op="assign", reader=name, session=name, isolation=isolation, partitions=parts)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def consume(timeout):
        for m in c.consume(500, timeout):
            if m.error():
                continue
            h.write(op="read", reader=name, session=name, isolation=isolation, value=m.value().decode(),
                    partition=m.partition(), offset=m.offset())

    while not stopping and not until_end:
        consume(0.5)
    # To the end: every transaction has ended by now, so the last stable
    # offset is the high watermark.
    deadline = time.monotonic() + 120
    ends = None
    while time.monotonic() < deadline:
        try:
            if ends is None:
                ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
            pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
        except KafkaException as e:
            h.write(op="client_error", who=name, error=str(e), fatal=False)
            time.sleep(0.5)
            continue
        if all(pos[p] >= ends[p] or (ends[p] == 0) for p in parts):
            h.write(op="reader_end", reader=name, isolation=isolation, ends={str(p): ends[p] for p in parts})
            c.close()
            return 0
        consume(0.5)
    h.write(op="reader_stuck", reader=name, isolation=isolation, ends=ends, positions=pos)
    return 1


def main(argv):
    role, args = argv[1], argv[2:]
    if role == "fill":
        return fill(args[0], args[1], int(args[2]), args[3])
    if role == "worker":
        return worker(*args[:8])
    if role == "reader":
        return reader(*args[:5], until_end="--until-end" in args)
    print("unknown role", role, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
