#!/usr/bin/env python3
"""Kafka compatibility scenarios for the Python clients, run against a live
`pgbroker serve`.

    python_clients.py BOOTSTRAP PREFIX --client confluent|kafka-python|aiokafka
                      [--scenario NAME ...] [--debug]

Runs with Debian's /usr/bin/python3 (python3-confluent-kafka, python3-kafka)
or with compat/.venv's python (PyPI confluent-kafka, kafka-python, aiokafka).
Prints one `PASS <client> <scenario>` or `FAIL <client> <scenario>: why` line
per scenario and exits 1 if any failed.

Topics that a scenario needs before it starts are created with the pgbroker
CLI, so that a broken CreateTopics only fails the admin scenario. That needs
PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA in the environment.

Every scenario is one strict check: a client that cannot do something the
scenario needs fails it. The only exceptions are named SKIP lines for a
feature the installed client version lacks (say, a compression codec whose
Python package is not installed), never for a server error.
"""

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

# One scenario may not take longer than this; a hang fails in seconds.
SCENARIO_SECONDS = 120
# How long a single wait for data or a rebalance may take.
WAIT_SECONDS = 20
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000
REQUEST_TIMEOUT_MS = 10000


def _version(v):
    """confluent-kafka 1.x answers (str, int), 2.x a str."""
    return v[0] if isinstance(v, tuple) else v


class Skip(Exception):
    """The installed client version lacks the feature under test."""


class Check(Exception):
    """A scenario's expectation did not hold."""


def check(cond, msg):
    if not cond:
        raise Check(msg)


class Rec:
    """A record as read back, the same shape for every client."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "headers", "timestamp")

    def __init__(self, topic, partition, offset, key, value, headers, timestamp):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp = key, value, timestamp
        # Headers as a list of (str, bytes); clients give None or [] for none.
        self.headers = [(k, bytes(v) if v is not None else None) for k, v in (headers or [])]

    def __repr__(self):
        return f"Rec({self.topic}[{self.partition}]@{self.offset} k={self.key!r} v={self.value[:40]!r} h={self.headers})"


def pgbroker(*args):
    """Runs the pgbroker CLI against the server's database and schema."""
    try:
        cmd = [os.environ["PGBROKER_BIN"], "--database-url", os.environ["PGBROKER_DATABASE_URL"],
               "--schema", os.environ["PGBROKER_SCHEMA"], *args]
    except KeyError as e:
        raise Check(f"environment variable {e} is required to create topics with the pgbroker CLI")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Check(f"pgbroker {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def make_topic(name, partitions):
    pgbroker("topic", "create", name, "--partitions", str(partitions))


def wait_until(cond, what, seconds=WAIT_SECONDS, step=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise Check(f"timed out after {seconds}s waiting for {what}")


def error_codes(obj):
    """Every non-zero `error_code` in a decoded admin response (dicts and
    lists of any depth, or a response object with to_object())."""
    if hasattr(obj, "to_object"):
        obj = obj.to_object()
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "error_code" and v:
                found.append(v)
            else:
                found.extend(error_codes(v))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found.extend(error_codes(v))
    return found


def field(d, *names):
    """The first present key: response field names differ between versions."""
    for n in names:
        if n in d:
            return d[n]
    raise KeyError(f"none of {names} in {sorted(d)}")


# ---------------------------------------------------------------------------
# Client adapters: the same small interface over each library.
#   metadata() -> (brokers [(id, host, port)], {topic: {partition: leader}})
#   produce(topic, recs, idempotent=False, compression=None) -> [(partition, offset)]
#     recs: dicts with value and optional key, headers, partition, timestamp
#   watermarks(topic, partitions) -> {p: high}
#   read_all(topic, partitions) -> [Rec] from offset 0 up to the high watermarks
#   offsets_for_times(topic, {p: ts}) -> {p: offset or None}
#   committed(group, topic, partitions) -> {p: offset or None}
#   group_consumer(group, topic) -> object with poll() -> [Rec],
#     commit(recs), assignment() -> set of partitions, close()
#   admin_create(name, partitions), admin_delete(name), admin_list() -> set;
#     admin_create raises TopicExists for code 36.
#   codecs(): compression codecs this installation supports
# ---------------------------------------------------------------------------


class TopicExists(Exception):
    pass


TOPIC_ALREADY_EXISTS = 36


def read_until_watermarks(adapter, consumer_factory, topic, partitions):
    """Shared loop for read_all: poll until every partition reached its high
    watermark (queried first, via ListOffsets)."""
    high = adapter.watermarks(topic, partitions)
    want = {p: h for p, h in high.items() if h > 0}
    out = []
    if not want:
        return out
    c = consumer_factory(want)
    try:
        pos = {p: 0 for p in want}
        deadline = time.monotonic() + WAIT_SECONDS
        while any(pos[p] < want[p] for p in want):
            check(time.monotonic() < deadline,
                  f"read_all {topic}: timed out at positions {pos}, high watermarks {want}")
            for r in c.poll():
                out.append(r)
                pos[r.partition] = max(pos[r.partition], r.offset + 1)
    finally:
        c.close()
    return out


class Confluent:
    name = "confluent"

    def __init__(self, bootstrap, debug):
        import confluent_kafka as ck
        from confluent_kafka import admin as ck_admin
        self.ck, self.ck_admin = ck, ck_admin
        self.bootstrap = bootstrap
        self.base = {"bootstrap.servers": bootstrap, "socket.timeout.ms": REQUEST_TIMEOUT_MS}
        if debug:
            self.base["debug"] = "protocol,broker,cgrp,topic,msg"
        self.version = f"confluent-kafka {_version(ck.version())} / librdkafka {_version(ck.libversion())}"

    def codecs(self):
        # librdkafka builds from Debian and PyPI both include all four.
        return ["gzip", "snappy", "lz4", "zstd"]

    def _admin(self):
        return self.ck_admin.AdminClient(dict(self.base))

    def metadata(self):
        md = self._admin().list_topics(timeout=10)
        brokers = [(b.id, b.host, b.port) for b in md.brokers.values()]
        topics = {}
        for name, t in md.topics.items():
            check(t.error is None, f"metadata: topic {name} error {t.error}")
            topics[name] = {p.id: p.leader for p in t.partitions.values()}
        return brokers, topics

    def produce(self, topic, recs, idempotent=False, compression=None):
        conf = dict(self.base, **{"acks": "all", "linger.ms": 5, "message.timeout.ms": 15000})
        if idempotent:
            conf["enable.idempotence"] = True
        if compression:
            conf["compression.type"] = compression
        p = self.ck.Producer(conf)
        results = [None] * len(recs)
        errors = []

        def on_delivery(i):
            def cb(err, msg):
                if err is not None:
                    errors.append(f"record {i}: {err}")
                else:
                    results[i] = (msg.partition(), msg.offset())
            return cb

        for i, r in enumerate(recs):
            kw = {"value": r["value"], "key": r.get("key"), "on_delivery": on_delivery(i)}
            if r.get("headers") is not None:
                kw["headers"] = r["headers"]
            if r.get("partition") is not None:
                kw["partition"] = r["partition"]
            if r.get("timestamp") is not None:
                kw["timestamp"] = r["timestamp"]
            while True:
                try:
                    p.produce(topic, **kw)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(20)
        check(not errors, f"produce to {topic}: {errors[:3]} ({len(errors)} errors)")
        check(left == 0, f"produce to {topic}: {left} records undelivered after 20s")
        return results

    def _consumer(self, group=None, extra=None):
        conf = dict(self.base, **{
            # A group id is needed by older bindings even for assign().
            "group.id": group or f"compat-assign-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
        })
        conf.update(extra or {})
        return self.ck.Consumer(conf)

    def watermarks(self, topic, partitions):
        c = self._consumer()
        try:
            return {p: c.get_watermark_offsets(self.ck.TopicPartition(topic, p), timeout=10)[1]
                    for p in partitions}
        finally:
            c.close()

    def _rec(self, m):
        err = m.error()
        check(err is None, f"consume: error {err}")
        return Rec(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers(),
                   m.timestamp()[1])

    def read_all(self, topic, partitions):
        ck = self.ck

        def factory(want):
            c = self._consumer()
            c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in want])
            return _Poller(lambda: [self._rec(m) for m in c.consume(500, 0.5)], c.close)

        return read_until_watermarks(self, factory, topic, partitions)

    def offsets_for_times(self, topic, stamps):
        c = self._consumer()
        try:
            res = c.offsets_for_times([self.ck.TopicPartition(topic, p, ts) for p, ts in stamps.items()],
                                      timeout=10)
        finally:
            c.close()
        out = {}
        for tp in res:
            check(tp.error is None, f"offsets_for_times: partition {tp.partition} error {tp.error}")
            out[tp.partition] = None if tp.offset < 0 else tp.offset
        return out

    def committed(self, group, topic, partitions):
        c = self._consumer(group)
        try:
            res = c.committed([self.ck.TopicPartition(topic, p) for p in partitions], timeout=10)
        finally:
            c.close()
        return {tp.partition: (None if tp.offset < 0 else tp.offset) for tp in res}

    def group_consumer(self, group, topic):
        ck = self.ck
        c = self._consumer(group)
        c.subscribe([topic])

        def commit(recs):
            last = {}
            for r in recs:
                last[r.partition] = max(last.get(r.partition, -1), r.offset)
            c.commit(offsets=[ck.TopicPartition(topic, p, o + 1) for p, o in last.items()],
                     asynchronous=False)

        return _Member(
            poll=lambda: [self._rec(m) for m in c.consume(500, 0.5)],
            commit=commit,
            assignment=lambda: {tp.partition for tp in c.assignment()},
            close=c.close,
        )

    def admin_create(self, name, partitions):
        # The client must outlive its futures: a collected one fails them.
        admin = self._admin()
        futs = admin.create_topics(
            [self.ck_admin.NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=10, request_timeout=10)
        try:
            futs[name].result(timeout=15)
        except self.ck.KafkaException as e:
            if e.args[0].code() == self.ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicExists(str(e))
            raise

    def admin_delete(self, name):
        admin = self._admin()
        futs = admin.delete_topics([name], operation_timeout=10, request_timeout=10)
        futs[name].result(timeout=15)

    def admin_list(self):
        return set(self._admin().list_topics(timeout=10).topics)


class _Poller:
    def __init__(self, poll, close):
        self.poll, self.close = poll, close


class _Member:
    def __init__(self, poll, commit, assignment, close):
        self.poll, self.commit, self.assignment, self.close = poll, commit, assignment, close


class KafkaPython:
    name = "kafka-python"

    def __init__(self, bootstrap, debug):
        import kafka
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.version = f"kafka-python {kafka.__version__}"
        if debug:
            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    def codecs(self):
        from kafka import codec
        return [c for c in ("gzip", "snappy", "lz4", "zstd") if getattr(codec, f"has_{c}")()]

    def _admin(self):
        return self.kafka.KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                           request_timeout_ms=REQUEST_TIMEOUT_MS)

    def metadata(self):
        a = self._admin()
        try:
            cluster = a.describe_cluster()
            brokers = [(field(b, "node_id", "broker_id", "nodeId"), b["host"], b["port"]) for b in cluster["brokers"]]
            topics = {}
            for t in a.describe_topics():
                name = field(t, "topic", "name")
                check(not field(t, "error_code"), f"metadata: topic {name} error {t}")
                topics[name] = {field(p, "partition", "partition_index"): field(p, "leader", "leader_id")
                                for p in t["partitions"]}
            return brokers, topics
        finally:
            a.close()

    def produce(self, topic, recs, idempotent=False, compression=None):
        conf = dict(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                    request_timeout_ms=REQUEST_TIMEOUT_MS, max_block_ms=REQUEST_TIMEOUT_MS)
        if "enable_idempotence" in self.kafka.KafkaProducer.DEFAULT_CONFIG:
            # Newer kafka-python turns idempotence on by default; ask for
            # exactly what the scenario wants.
            conf["enable_idempotence"] = bool(idempotent)
        elif idempotent:
            raise Skip(f"{self.version} has no idempotent producer")
        if compression:
            conf["compression_type"] = compression
        p = self.kafka.KafkaProducer(**conf)
        try:
            futs = [p.send(topic, value=r["value"], key=r.get("key"), headers=r.get("headers"),
                           partition=r.get("partition"), timestamp_ms=r.get("timestamp"))
                    for r in recs]
            p.flush(timeout=20)
            out = []
            for f in futs:
                md = f.get(timeout=10)
                out.append((md.partition, md.offset))
            return out
        finally:
            p.close(timeout=5)

    def _consumer(self, group=None, **extra):
        return self.kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS, request_timeout_ms=SESSION_TIMEOUT_MS + 5000,
            **extra)

    def _tps(self, topic, partitions):
        return [self.kafka.TopicPartition(topic, p) for p in partitions]

    def watermarks(self, topic, partitions):
        c = self._consumer()
        try:
            return {tp.partition: off for tp, off in c.end_offsets(self._tps(topic, partitions)).items()}
        finally:
            c.close()

    @staticmethod
    def _recs(batch):
        return [Rec(m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)
                for msgs in batch.values() for m in msgs]

    def read_all(self, topic, partitions):
        def factory(want):
            c = self._consumer()
            c.assign(self._tps(topic, want))
            c.seek_to_beginning()
            return _Poller(lambda: self._recs(c.poll(timeout_ms=500)), c.close)

        return read_until_watermarks(self, factory, topic, partitions)

    def offsets_for_times(self, topic, stamps):
        c = self._consumer()
        try:
            res = c.offsets_for_times({self.kafka.TopicPartition(topic, p): ts for p, ts in stamps.items()})
        finally:
            c.close()
        return {tp.partition: (None if v is None else v.offset) for tp, v in res.items()}

    def committed(self, group, topic, partitions):
        c = self._consumer(group)
        try:
            return {tp.partition: c.committed(tp) for tp in self._tps(topic, partitions)}
        finally:
            c.close()

    def _offset_meta(self, off):
        from kafka.structs import OffsetAndMetadata
        try:
            return OffsetAndMetadata(off, "", -1)  # kafka-python >= 2.1: leader epoch too
        except TypeError:
            return OffsetAndMetadata(off, "")

    def group_consumer(self, group, topic):
        c = self._consumer(group)
        c.subscribe([topic])

        def commit(recs):
            last = {}
            for r in recs:
                last[r.partition] = max(last.get(r.partition, -1), r.offset)
            c.commit({self.kafka.TopicPartition(topic, p): self._offset_meta(o + 1) for p, o in last.items()})

        return _Member(
            poll=lambda: self._recs(c.poll(timeout_ms=500)),
            commit=commit,
            assignment=lambda: {tp.partition for tp in c.assignment()},
            close=c.close,
        )

    def admin_create(self, name, partitions):
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError
        a = self._admin()
        try:
            resp = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                   timeout_ms=REQUEST_TIMEOUT_MS)
        except TopicAlreadyExistsError as e:
            raise TopicExists(str(e))
        finally:
            a.close()
        # Older versions return the response instead of raising.
        codes = error_codes(resp)
        if TOPIC_ALREADY_EXISTS in codes:
            raise TopicExists(str(codes))
        check(not codes, f"CreateTopics {name}: error codes {codes}")

    def admin_delete(self, name):
        a = self._admin()
        try:
            resp = a.delete_topics([name], timeout_ms=REQUEST_TIMEOUT_MS)
        finally:
            a.close()
        codes = error_codes(resp)
        check(not codes, f"DeleteTopics {name}: error codes {codes}")

    def admin_list(self):
        a = self._admin()
        try:
            return set(a.list_topics())
        finally:
            a.close()


class AioKafka:
    """aiokafka behind the same synchronous interface: its objects live on an
    event loop in a background thread, and each call waits for its result."""

    name = "aiokafka"

    def __init__(self, bootstrap, debug):
        import aiokafka
        self.aiokafka = aiokafka
        self.bootstrap = bootstrap
        self.version = f"aiokafka {aiokafka.__version__}"
        if debug:
            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro, timeout=WAIT_SECONDS + 10):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise Check(f"aiokafka call {coro.__qualname__} did not finish within {timeout}s")

    def codecs(self):
        from aiokafka import codec
        return [c for c in ("gzip", "snappy", "lz4", "zstd") if getattr(codec, f"has_{c}")()]

    async def _admin(self):
        from aiokafka.admin import AIOKafkaAdminClient
        a = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
        await a.start()
        return a

    def metadata(self):
        async def go():
            a = await self._admin()
            try:
                cluster = await a.describe_cluster()
                topics = await a.describe_topics()
            finally:
                await a.close()
            brokers = [(field(b, "node_id", "broker_id", "nodeId"), b["host"], b["port"]) for b in cluster["brokers"]]
            out = {}
            for t in topics:
                name = field(t, "topic", "name")
                check(not field(t, "error_code"), f"metadata: topic {name} error {t}")
                out[name] = {field(p, "partition", "partition_index"): field(p, "leader", "leader_id")
                             for p in t["partitions"]}
            return brokers, out
        return self.run(go())

    def produce(self, topic, recs, idempotent=False, compression=None):
        async def go():
            p = self.aiokafka.AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                enable_idempotence=idempotent, compression_type=compression,
                request_timeout_ms=REQUEST_TIMEOUT_MS)
            await p.start()
            try:
                futs = [await p.send(topic, value=r["value"], key=r.get("key"), headers=r.get("headers"),
                                     partition=r.get("partition"), timestamp_ms=r.get("timestamp"))
                        for r in recs]
                mds = await asyncio.gather(*futs)
                return [(md.partition, md.offset) for md in mds]
            finally:
                await p.stop()
        return self.run(go())

    async def _consumer(self, group=None):
        # Created inside a coroutine: aiokafka binds it to the running loop.
        return self.aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS, request_timeout_ms=REQUEST_TIMEOUT_MS)

    def _tps(self, topic, partitions):
        return [self.aiokafka.TopicPartition(topic, p) for p in partitions]

    def watermarks(self, topic, partitions):
        async def go():
            c = await self._consumer()
            await c.start()
            try:
                return {tp.partition: o for tp, o in (await c.end_offsets(self._tps(topic, partitions))).items()}
            finally:
                await c.stop()
        return self.run(go())

    @staticmethod
    def _recs(batch):
        return [Rec(m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)
                for msgs in batch.values() for m in msgs]

    def read_all(self, topic, partitions):
        def factory(want):
            c = self.run(self._consumer())

            async def start():
                await c.start()
                c.assign(self._tps(topic, want))
                await c.seek_to_beginning()
            self.run(start())
            return _Poller(lambda: self._recs(self.run(c.getmany(timeout_ms=500))),
                           lambda: self.run(c.stop()))

        return read_until_watermarks(self, factory, topic, partitions)

    def offsets_for_times(self, topic, stamps):
        async def go():
            c = await self._consumer()
            await c.start()
            try:
                return await c.offsets_for_times({self.aiokafka.TopicPartition(topic, p): ts
                                                  for p, ts in stamps.items()})
            finally:
                await c.stop()
        res = self.run(go())
        return {tp.partition: (None if v is None else v.offset) for tp, v in res.items()}

    def committed(self, group, topic, partitions):
        async def go():
            c = await self._consumer(group)
            await c.start()
            try:
                return {tp.partition: await c.committed(tp) for tp in self._tps(topic, partitions)}
            finally:
                await c.stop()
        return self.run(go())

    def group_consumer(self, group, topic):
        c = self.run(self._consumer(group))

        async def start():
            c.subscribe([topic])
            await c.start()
        self.run(start())

        def commit(recs):
            last = {}
            for r in recs:
                last[r.partition] = max(last.get(r.partition, -1), r.offset)
            self.run(c.commit({self.aiokafka.TopicPartition(topic, p): o + 1 for p, o in last.items()}))

        return _Member(
            poll=lambda: self._recs(self.run(c.getmany(timeout_ms=500))),
            commit=commit,
            assignment=lambda: {tp.partition for tp in c.assignment()},
            close=lambda: self.run(c.stop()),
        )

    def admin_create(self, name, partitions):
        from aiokafka.admin import NewTopic

        async def go():
            a = await self._admin()
            try:
                return await a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            finally:
                await a.close()
        codes = error_codes(self.run(go()))
        if TOPIC_ALREADY_EXISTS in codes:
            raise TopicExists(str(codes))
        check(not codes, f"CreateTopics {name}: error codes {codes}")

    def admin_delete(self, name):
        async def go():
            a = await self._admin()
            try:
                return await a.delete_topics([name])
            finally:
                await a.close()
        codes = error_codes(self.run(go()))
        check(not codes, f"DeleteTopics {name}: error codes {codes}")

    def admin_list(self):
        async def go():
            a = await self._admin()
            try:
                return await a.list_topics()
            finally:
                await a.close()
        return set(self.run(go()))


CLIENTS = {"confluent": Confluent, "kafka-python": KafkaPython, "aiokafka": AioKafka}


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def scenario_metadata(c, prefix, bootstrap):
    topic = f"{prefix}meta"
    make_topic(topic, 3)
    brokers, topics = c.metadata()
    check(brokers, "metadata lists no broker")
    host, port = bootstrap.rsplit(":", 1)
    check(any(h == host and p == int(port) for _, h, p in brokers),
          f"no broker advertises {bootstrap}: {brokers}")
    check(topic in topics, f"topic {topic} missing from metadata ({len(topics)} topics listed)")
    parts = topics[topic]
    check(sorted(parts) == [0, 1, 2], f"{topic} partitions {sorted(parts)}, want [0, 1, 2]")
    ids = {b for b, _, _ in brokers}
    check(all(leader in ids for leader in parts.values()), f"leaders {parts} not among brokers {ids}")


def scenario_produce_consume(c, prefix, bootstrap):
    topic = f"{prefix}pc"
    make_topic(topic, 3)
    recs = []
    for i in range(60):
        key = f"key-{i % 7}".encode()
        recs.append({"key": key, "value": f"value-{i}".encode(),
                     "headers": [("seq", str(i).encode()), ("kind", b"compat"), ("empty", b"")]})
    # Edge cases: no key, empty value, binary bytes, a repeated header key.
    recs.append({"key": None, "value": b"no-key", "headers": []})
    recs.append({"key": b"key-empty", "value": b"", "headers": [("x", b"1")]})
    recs.append({"key": bytes(range(256)), "value": bytes(range(255, -1, -1)) * 4,
                 "headers": [("bin", bytes(range(256)))]})
    recs.append({"key": b"dup-header", "value": b"v", "headers": [("h", b"1"), ("h", b"2")]})
    acks = c.produce(topic, recs)
    got = c.read_all(topic, [0, 1, 2])
    check(len(got) == len(recs), f"read back {len(got)} records, produced {len(recs)}")
    by_pos = {(r.partition, r.offset): r for r in got}
    for i, (want, (p, o)) in enumerate(zip(recs, acks)):
        r = by_pos.get((p, o))
        check(r is not None, f"record {i} acknowledged at {p}@{o} not read back")
        check(r.key == want["key"], f"record {i}: key {r.key!r}, want {want['key']!r}")
        check(r.value == want["value"], f"record {i}: value {r.value[:40]!r}, want {want['value'][:40]!r}")
        check(r.headers == want["headers"], f"record {i}: headers {r.headers}, want {want['headers']}")
    # One key, one partition, production order.
    per_key = {}
    for i, (want, (p, o)) in enumerate(zip(recs[:60], acks[:60])):
        per_key.setdefault(want["key"], []).append((p, o))
    for key, pos in per_key.items():
        check(len({p for p, _ in pos}) == 1, f"key {key!r} spread over partitions {pos}")
        check([o for _, o in pos] == sorted(o for _, o in pos), f"key {key!r} out of order: {pos}")


def scenario_offsets_for_times(c, prefix, bootstrap):
    topic = f"{prefix}times"
    make_topic(topic, 2)
    base = (int(time.time()) - 3600) * 1000  # an hour ago, on a second
    recs = [{"key": b"k", "value": f"t{i}".encode(), "partition": 0, "timestamp": base + i * 1000}
            for i in range(10)]
    acks = c.produce(topic, recs)
    check([o for _, o in acks] == list(range(10)), f"offsets {acks}")
    got = sorted(c.read_all(topic, [0, 1]), key=lambda r: r.offset)
    check([r.timestamp for r in got] == [r["timestamp"] for r in recs],
          f"timestamps read back {[r.timestamp for r in got]}, produced {[r['timestamp'] for r in recs]}")
    cases = [
        (base - 5000, 0, "before the first record"),
        (base, 0, "exactly the first record"),
        (base + 4500, 5, "between records 4 and 5"),
        (base + 9000, 9, "exactly the last record"),
    ]
    for ts, want, what in cases:
        res = c.offsets_for_times(topic, {0: ts})
        check(res.get(0) == want, f"offsets_for_times({what}, ts={ts}) = {res.get(0)}, want {want}")
    res = c.offsets_for_times(topic, {0: base + 60_000, 1: base})
    check(res.get(0) is None, f"offsets_for_times(after the last record) = {res.get(0)}, want none (-1)")
    check(res.get(1) is None, f"offsets_for_times(empty partition) = {res.get(1)}, want none (-1)")


def scenario_admin(c, prefix, bootstrap):
    topic = f"{prefix}admin"
    c.admin_create(topic, 4)
    wait_until(lambda: topic in c.admin_list(), f"{topic} to be listed after CreateTopics", seconds=10)
    _, topics = c.metadata()
    check(sorted(topics.get(topic, {})) == [0, 1, 2, 3], f"{topic} partitions {topics.get(topic)}, want 0..3")
    try:
        c.admin_create(topic, 4)
        raise Check("creating an existing topic succeeded; want TOPIC_ALREADY_EXISTS (36)")
    except TopicExists:
        pass
    # The new topic takes records.
    acks = c.produce(topic, [{"key": b"a", "value": b"b"}])
    check(len(acks) == 1, f"produce after create: {acks}")
    c.admin_delete(topic)
    wait_until(lambda: topic not in c.admin_list(), f"{topic} to leave the listing after DeleteTopics",
               seconds=10)


def scenario_idempotent(c, prefix, bootstrap):
    topic = f"{prefix}idem"
    make_topic(topic, 3)
    n = 3000
    recs = [{"key": f"k{i % 13}".encode(), "value": f"{i % 13}:{i // 13}".encode()} for i in range(n)]
    acks = c.produce(topic, recs, idempotent=True)
    got = c.read_all(topic, [0, 1, 2])
    check(len(got) == n, f"read back {len(got)} records, produced {n} (duplicates or loss)")
    values = [r.value for r in got]
    check(len(set(values)) == n, f"{n - len(set(values))} duplicate values")
    check(sorted(acks) == sorted((r.partition, r.offset) for r in got), "acknowledged positions differ from read")
    seqs = {}
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        k, s = r.value.decode().split(":")
        seqs.setdefault((r.partition, k), []).append(int(s))
    for (p, k), s in seqs.items():
        check(s == list(range(len(s))), f"partition {p} key {k}: sequence {s[:20]}... not 0,1,2,...")


def scenario_compression(c, prefix, bootstrap, codec):
    topic = f"{prefix}z{codec}"
    make_topic(topic, 2)
    # Repetitive values so the codec has something to do; one large one too.
    recs = [{"key": f"k{i % 5}".encode(), "value": (f"{codec}-{i}-" + "abcdefgh" * 50).encode(),
             "headers": [("i", str(i).encode())]} for i in range(500)]
    recs.append({"key": b"big", "value": b"0123456789" * 50_000, "headers": []})
    acks = c.produce(topic, recs, compression=codec)
    got = c.read_all(topic, [0, 1])
    check(len(got) == len(recs), f"{codec}: read back {len(got)}, produced {len(recs)}")
    by_pos = {(r.partition, r.offset): r for r in got}
    for i, (want, pos) in enumerate(zip(recs, acks)):
        r = by_pos.get(pos)
        check(r is not None and r.value == want["value"] and r.key == want["key"]
              and r.headers == want["headers"], f"{codec}: record {i} at {pos} differs: {r!r}")


class MemberThread:
    """One group member polling in its own thread: records what it read and
    its current assignment, commits after every non-empty batch."""

    def __init__(self, c, group, topic, name, log):
        self.name, self.log = name, log
        self.member = c.group_consumer(group, topic)
        self.seen = []
        self.assigned = set()
        self.error = None
        self.commit_errors = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop_flag.is_set():
                batch = self.member.poll()
                self.assigned = self.member.assignment()
                if batch:
                    self.seen.extend(batch)
                    try:
                        self.member.commit(batch)
                    except Exception as e:  # a commit racing a rebalance is allowed to fail
                        self.commit_errors += 1
                        self.log(f"{self.name}: commit failed: {e!r}")
            self.member.close()
        except Exception as e:
            self.error = e
            self.log(f"{self.name}: {traceback.format_exc()}")

    def stop(self, timeout=WAIT_SECONDS):
        self.stop_flag.set()
        self.thread.join(timeout)
        check(not self.thread.is_alive(), f"member {self.name} did not close within {timeout}s")
        check(self.error is None, f"member {self.name} failed: {self.error!r}")


def scenario_group(c, prefix, bootstrap):
    topic, group = f"{prefix}grp", f"{prefix}group"
    parts = list(range(6))
    make_topic(topic, 6)
    log = lambda m: print(f"  [group] {m}", file=sys.stderr, flush=True)
    produced = set()

    def produce(tag, n):
        recs = [{"key": f"k{i % 17}".encode(), "value": f"{tag}-{i}".encode()} for i in range(n)]
        c.produce(topic, recs)
        produced.update(r["value"] for r in recs)

    def covered(members):
        """Every partition assigned to exactly one member, each member some."""
        got = [m.assigned for m in members]
        flat = [p for a in got for p in a]
        return sorted(flat) == parts and all(got)

    def all_seen(members):
        seen = {r.value for m in members for r in m.seen}
        return produced <= seen

    a = MemberThread(c, group, topic, "A", log)
    b = MemberThread(c, group, topic, "B", log)
    members = [a, b]
    try:
        wait_until(lambda: covered([a, b]), "two members to share 6 partitions")
        produce("one", 300)
        wait_until(lambda: all_seen([a, b]), "phase one records to be consumed")

        late = MemberThread(c, group, topic, "C", log)  # joins late
        members.append(late)
        wait_until(lambda: covered([a, b, late]), "the late member to get partitions (2 each)")
        check(all(len(m.assigned) == 2 for m in (a, b, late)),
              f"6 partitions over 3 members: {[sorted(m.assigned) for m in (a, b, late)]}")
        produce("two", 300)
        wait_until(lambda: all_seen(members), "phase two records to be consumed")

        b.stop()  # leaves mid-way
        wait_until(lambda: covered([a, late]), "the two remaining members to take over B's partitions")
        produce("three", 300)
        wait_until(lambda: all_seen(members), "phase three records to be consumed by A and C")

        high = c.watermarks(topic, parts)
        check(sum(high.values()) == 900, f"high watermarks {high} sum to {sum(high.values())}, want 900")
        wait_until(lambda: c.committed(group, topic, parts) == high,
                   f"committed offsets to reach the high watermarks {high}")
    except BaseException:
        # Close what is left without letting a close error hide the failure.
        for m in members:
            try:
                m.stop(timeout=2)  # a stuck daemon thread is abandoned
            except Exception as e:
                log(f"while failing: {e}")
        raise
    for m in members:
        if m.thread.is_alive():
            m.stop()

    # The commits survive the whole group closing.
    committed = c.committed(group, topic, parts)
    check(committed == high, f"after closing: committed {committed}, want {high}")
    produce("four", 60)
    # A new member starts at the committed offsets, not at the log start
    # (auto.offset.reset is earliest, so lost offsets would show).
    d = MemberThread(c, group, topic, "D", log)
    try:
        wait_until(lambda: len(d.seen) >= 60 and d.assigned == set(parts), "the restarted group to read 60 new records")
        time.sleep(1)
    except BaseException:
        try:
            d.stop(timeout=2)
        except Exception as e:
            log(f"while failing: {e}")
        raise
    d.stop()
    first = {}
    for r in d.seen:
        first.setdefault(r.partition, r.offset)
    for p in parts:
        if p in first:
            check(first[p] == committed[p], f"restarted group began partition {p} at {first[p]}, committed {committed[p]}")
    values = sorted(r.value for r in d.seen)
    check(values == sorted(f"four-{i}".encode() for i in range(60)),
          f"restarted group read {len(values)} records, want the 60 new ones (first: {values[:3]})")
    if any(m.commit_errors for m in members):
        log(f"commit failures during rebalances: {[m.commit_errors for m in members]}")


SCENARIOS = ["metadata", "produce_consume", "group", "offsets_for_times", "admin", "idempotent", "compression"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--client", required=True, choices=sorted(CLIENTS))
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    ap.add_argument("--label", help="name printed on result lines (default: the client)")
    ap.add_argument("--debug", action="store_true", help="client debug logging to stderr")
    args = ap.parse_args()

    client = CLIENTS[args.client](args.bootstrap, args.debug)
    label = args.label or args.client
    print(f"# {label}: {client.version} on Python {sys.version.split()[0]} ({sys.executable})", flush=True)
    failures = 0

    def alarm(signum, frame):
        raise Check(f"scenario exceeded {SCENARIO_SECONDS}s")

    signal.signal(signal.SIGALRM, alarm)

    def run(name, fn, *extra):
        nonlocal failures
        # A hard stop too, for a hang inside a C call where the alarm cannot
        # interrupt Python code.
        watchdog = threading.Timer(SCENARIO_SECONDS + 20, lambda: (
            print(f"FAIL {label} {name}: hung for {SCENARIO_SECONDS + 20}s (hard stop)", flush=True),
            os._exit(3)))
        watchdog.daemon = True
        watchdog.start()
        signal.alarm(SCENARIO_SECONDS)
        started = time.monotonic()
        try:
            fn(client, f"{args.prefix}{name.replace('-', '_')}_", args.bootstrap, *extra)
            print(f"PASS {label} {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except Skip as e:
            print(f"SKIP {label} {name}: {e}", flush=True)
        except Exception as e:
            failures += 1
            print(f"FAIL {label} {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
        finally:
            signal.alarm(0)
            watchdog.cancel()

    for name in args.scenario or SCENARIOS:
        if name == "compression":
            have = client.codecs()
            for codec in ("gzip", "snappy", "lz4", "zstd"):
                if codec in have:
                    run(f"compression-{codec}", scenario_compression, codec)
                else:
                    print(f"SKIP {label} compression-{codec}: the codec's Python package is not installed "
                          f"({client.version} needs an extra package for it)", flush=True)
        else:
            run(name, globals()[f"scenario_{name}"])
    sys.stdout.flush()
    # Background threads of some clients can keep the interpreter alive.
    os._exit(1 if failures else 0)


if __name__ == "__main__":
    main()
