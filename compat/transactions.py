#!/usr/bin/env python3
"""Kafka transaction scenarios for the Python clients' transactional
producers, run against a live `pgbroker serve`.

    transactions.py BOOTSTRAP PREFIX --client confluent|kafka-python|aiokafka [--label L] [--debug]

Each scenario drives the client's own transactional producer; what is
visible afterwards is read with confluent-kafka consumers (librdkafka's
read_committed and read_uncommitted), the strictest reader. Topics are
created with the pgbroker CLI (PGBROKER_BIN, PGBROKER_DATABASE_URL and
PGBROKER_SCHEMA in the environment). Prints one `PASS` or `FAIL` line per
scenario and exits 1 if any failed.

Scenarios:
  exactly_once  consume input in a group, produce to several partitions of
                two topics, send the input offsets to the transaction and
                commit; then a transaction that is aborted; then one more
                commit. read_committed sees exactly the committed records,
                in order per partition; read_uncommitted sees the aborted
                ones too; the group's offset is the committed one.
  fencing       a second producer with the same transactional id fences the
                first: its commit fails and its records are never visible
                to read_committed.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
import traceback

WAIT_SECONDS = 20
TXN_TIMEOUT_MS = 30000


class Check(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Check(msg)


def pgbroker(*args):
    cmd = [os.environ["PGBROKER_BIN"], "--database-url", os.environ["PGBROKER_DATABASE_URL"],
           "--schema", os.environ["PGBROKER_SCHEMA"], *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Check(f"pgbroker {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


# ---------------------------------------------------------------------------
# Reading back with librdkafka.
# ---------------------------------------------------------------------------

def read_back(bootstrap, topics, isolation):
    """Every record of `topics` visible at `isolation`, as
    {(topic, partition): [value, ...]} in offset order, read up to the
    high (or, read_committed, stable) watermarks."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        parts = []
        for t, n in topics.items():
            parts += [TopicPartition(t, p, 0) for p in range(n)]
        c.assign(parts)
        out = {(tp.topic, tp.partition): [] for tp in parts}
        last = {}
        eof = set()
        deadline = time.monotonic() + WAIT_SECONDS
        while len(eof) < len(parts):
            check(time.monotonic() < deadline, f"read_back {isolation}: only {sorted(eof)} reached the end")
            m = c.poll(0.5)
            if m is None:
                continue
            key = (m.topic(), m.partition())
            if m.error():
                check(m.error().code() == -191, f"read_back: {m.error()}")  # _PARTITION_EOF
                eof.add(key)
                continue
            eof.discard(key)
            check(m.offset() > last.get(key, -1), f"offsets went backwards on {key}")
            last[key] = m.offset()
            out[key].append(m.value().decode())
        return out
    finally:
        c.close()


def committed_offset(bootstrap, group, topic, partition):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
    finally:
        c.close()


def produce_plain(bootstrap, topic, values):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    check(p.flush(10) == 0, "plain produce did not finish")


# ---------------------------------------------------------------------------
# Transactional producers: begin, send, send_offsets, commit, abort.
# ---------------------------------------------------------------------------

class ConfluentTxn:
    def __init__(self, bootstrap, txn_id, debug):
        from confluent_kafka import Producer
        conf = {"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                "transaction.timeout.ms": TXN_TIMEOUT_MS}
        if debug:
            conf["debug"] = "eos,protocol,broker"
        self.p = Producer(conf)
        self.p.init_transactions(WAIT_SECONDS)

    def begin(self):
        self.p.begin_transaction()

    def send(self, topic, key, value):
        self.p.produce(topic, key=key.encode(), value=value.encode())

    def send_offsets(self, group_consumer, topic, partition, offset):
        from confluent_kafka import TopicPartition
        self.p.send_offsets_to_transaction([TopicPartition(topic, partition, offset)],
                                           group_consumer.consumer_group_metadata(), WAIT_SECONDS)

    def flush(self):
        check(self.p.flush(WAIT_SECONDS) == 0, "flush did not finish")

    def commit(self):
        self.p.commit_transaction(WAIT_SECONDS)

    def abort(self):
        self.p.abort_transaction(WAIT_SECONDS)

    def close(self):
        pass


class KafkaPythonTxn:
    def __init__(self, bootstrap, txn_id, debug):
        from kafka import KafkaProducer
        self.p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id,
                               transaction_timeout_ms=TXN_TIMEOUT_MS, request_timeout_ms=10000)
        self.p.init_transactions()

    def begin(self):
        self.p.begin_transaction()

    def send(self, topic, key, value):
        self.p.send(topic, key=key.encode(), value=value.encode())

    def send_offsets(self, group_consumer, topic, partition, offset):
        from kafka.structs import OffsetAndMetadata, TopicPartition
        meta = OffsetAndMetadata(offset, "", -1)
        self.p.send_offsets_to_transaction({TopicPartition(topic, partition): meta},
                                           group_consumer.group_id)

    def flush(self):
        self.p.flush(WAIT_SECONDS)

    def commit(self):
        self.p.commit_transaction()

    def abort(self):
        self.p.abort_transaction()

    def close(self):
        self.p.close(timeout=5)


class AiokafkaTxn:
    """aiokafka's producer on a private event loop, driven synchronously."""

    def __init__(self, bootstrap, txn_id, debug):
        from aiokafka import AIOKafkaProducer
        self.loop = asyncio.new_event_loop()

        async def start():
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id,
                                 transaction_timeout_ms=TXN_TIMEOUT_MS, request_timeout_ms=10000)
            await p.start()
            return p
        self.p = self.run(start())

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, WAIT_SECONDS))

    def begin(self):
        self.run(self.p.begin_transaction())

    def send(self, topic, key, value):
        self.run(self.p.send(topic, key=key.encode(), value=value.encode()))

    def send_offsets(self, group_consumer, topic, partition, offset):
        from aiokafka.structs import TopicPartition
        self.run(self.p.send_offsets_to_transaction({TopicPartition(topic, partition): offset},
                                                    group_consumer.group_id))

    def flush(self):
        self.run(self.p.flush())

    def commit(self):
        self.run(self.p.commit_transaction())

    def abort(self):
        self.run(self.p.abort_transaction())

    def close(self):
        self.run(self.p.stop())
        self.loop.close()


class ConfluentGroup:
    """The consume side of consume-transform-produce: a read_committed
    group member of the input topic."""

    def __init__(self, bootstrap, group, topic):
        from confluent_kafka import Consumer
        self.group_id = group
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        self.c.subscribe([topic])

    def take(self, n):
        got = []
        deadline = time.monotonic() + WAIT_SECONDS
        while len(got) < n:
            check(time.monotonic() < deadline, f"input: got {len(got)} of {n} records")
            m = self.c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
        return got

    def consumer_group_metadata(self):
        return self.c.consumer_group_metadata()

    def close(self):
        self.c.close()


CLIENTS = {"confluent": ConfluentTxn, "kafka-python": KafkaPythonTxn, "aiokafka": AiokafkaTxn}


def exactly_once(bootstrap, prefix, client_cls, debug):
    src, out, out2 = f"{prefix}in", f"{prefix}out", f"{prefix}out2"
    pgbroker("topic", "create", src, "--partitions", "1")
    pgbroker("topic", "create", out, "--partitions", "3")
    pgbroker("topic", "create", out2, "--partitions", "2")
    produce_plain(bootstrap, src, [f"in-{i}" for i in range(10)])
    group = f"{prefix}g"
    consumer = ConfluentGroup(bootstrap, group, src)
    producer = client_cls(bootstrap, f"{prefix}txn", debug)
    try:
        inputs = consumer.take(10)
        producer.begin()
        for m in inputs:
            v = m.value().decode()
            producer.send(out, v, f"c-{v}")
            producer.send(out2, v, f"c2-{v}")
        producer.send_offsets(consumer, src, 0, inputs[-1].offset() + 1)
        producer.commit()
        producer.begin()
        for i in range(6):
            producer.send(out, f"a{i}", f"aborted-{i}")
            producer.send(out2, f"a{i}", f"aborted2-{i}")
        # Written before the abort (else the clients drop them unsent).
        producer.flush()
        producer.abort()
        producer.begin()
        producer.send(out, "last", "c-last")
        producer.commit()
    finally:
        producer.close()
        consumer.close()
    topics = {out: 3, out2: 2}
    rc = read_back(bootstrap, topics, "read_committed")
    seen = [v for vs in rc.values() for v in vs]
    want = {f"c-in-{i}" for i in range(10)} | {f"c2-in-{i}" for i in range(10)} | {"c-last"}
    check(not [v for v in seen if v.startswith("aborted")], f"read_committed saw aborted records: {seen}")
    check(sorted(seen) == sorted(want), f"read_committed saw {sorted(seen)}, want {sorted(want)}")
    for key, vs in rc.items():
        # Records of one key go to one partition, in the order sent.
        ins = [int(v.rsplit("-", 1)[1]) for v in vs if v.startswith(("c-in-", "c2-in-"))]
        check(ins == sorted(ins), f"{key}: out of order {vs}")
    ru = read_back(bootstrap, topics, "read_uncommitted")
    seen_u = [v for vs in ru.values() for v in vs]
    check(len([v for v in seen_u if v.startswith("aborted")]) == 12,
          f"read_uncommitted should see the 12 aborted records: {sorted(seen_u)}")
    check(want <= set(seen_u), "read_uncommitted misses committed records")
    off = committed_offset(bootstrap, group, src, 0)
    check(off == 10, f"the group's committed offset is {off}, want 10")


def fencing(bootstrap, prefix, client_cls, debug):
    out = f"{prefix}fenced"
    pgbroker("topic", "create", out, "--partitions", "2")
    txn_id = f"{prefix}fence"
    old = client_cls(bootstrap, txn_id, debug)
    new = None
    try:
        old.begin()
        for i in range(4):
            old.send(out, f"k{i}", f"zombie-{i}")
        # The clients send asynchronously: the zombie's records are
        # written before the new instance starts.
        old.flush()
        new = client_cls(bootstrap, txn_id, debug)
        failed = None
        try:
            old.commit()
        except Exception as e:  # each client raises its own fencing error
            failed = e
        check(failed is not None, "the fenced producer's commit succeeded")
        new.begin()
        new.send(out, "k", "fresh")
        new.commit()
    finally:
        for p in (old, new):
            if p is not None:
                try:
                    p.close()
                except Exception:
                    pass
    rc = read_back(bootstrap, {out: 2}, "read_committed")
    seen = [v for vs in rc.values() for v in vs]
    check(seen == ["fresh"], f"read_committed saw {seen}, want only the new instance's record")
    ru = read_back(bootstrap, {out: 2}, "read_uncommitted")
    check(len([v for vs in ru.values() for v in vs if v.startswith("zombie")]) == 4,
          "the zombie's records should be in the log, aborted")


SCENARIOS = {"exactly_once": exactly_once, "fencing": fencing}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--client", required=True, choices=sorted(CLIENTS))
    ap.add_argument("--label")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    label = args.label or args.client
    failed = 0
    for name, fn in SCENARIOS.items():
        prefix = f"{args.prefix}{name[:4]}_"
        try:
            fn(args.bootstrap, prefix, CLIENTS[args.client], args.debug)
            print(f"PASS {label} txn_{name}", flush=True)
        except Exception as e:
            failed += 1
            traceback.print_exc()
            print(f"FAIL {label} txn_{name}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
