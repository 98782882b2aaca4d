#!/usr/bin/env python3
"""Kafka's consumer group protocol (KIP-848, `group.protocol=consumer`):
confluent-kafka against a live `pgbroker serve`.

    consumer_protocol.py BOOTSTRAP PREFIX [--label NAME] [--debug]

Scenarios, one PASS or FAIL line each:

- churn: three member processes on a 6-partition topic while records flow.
  A and B start, C joins late, B leaves (closes), A dies by SIGKILL. After
  each step the live members' partitions must cover the topic without
  overlap; every produced record must be consumed; at the end the group's
  committed offsets equal the high watermarks.
- regex: a member subscribed by regular expression (evaluated by the
  broker) reads a matching topic, then one created while it runs, and
  nothing of a topic that does not match.
- static: two static members (`group.instance.id`); one closes and comes
  back as a new consumer with the same instance id: meanwhile its
  partitions go to nobody, afterwards they are its own again.
- side-by-side: a classic group and a consumer-protocol group, two members
  each, read the same topic; each group reads every record. ListGroups
  with the type filter and ConsumerGroupDescribe see each group as what
  it is.

The server must run with a short consumer group session timeout
(`serve --group-consumer-session-timeout 6s`, as compat/run.sh starts it).
librdkafka older than 2.12 has no consumer protocol: SKIP.
Exits 1 if a scenario failed.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

# What compat/run.sh passes to serve as --group-consumer-session-timeout.
SESSION_S = 6
WAIT_S = 30
PARTITIONS = list(range(6))


def _version(v):
    return v[0] if isinstance(v, tuple) else v


def conf(bootstrap, group, protocol, debug):
    c = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
    }
    if debug:
        c["debug"] = "cgrp,protocol"
    return c


def member(bootstrap, group, topic, debug):
    """Child process: consume, commit every batch, report partitions and
    records on stdout as JSON lines; on SIGTERM close (leave the group)."""
    out = lambda obj: print(json.dumps(obj), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    c = ck.Consumer(conf(bootstrap, group, "consumer", debug))
    c.subscribe([topic])
    owned = None
    while not stop.is_set():
        msgs = c.consume(200, 0.2)
        now = sorted(tp.partition for tp in c.assignment())
        if now != owned:
            owned = now
            out({"assigned": now})
        last = {}
        for m in msgs:
            if m.error():
                out({"error": str(m.error())})
                continue
            out({"rec": m.value().decode()})
            last[m.partition()] = m.offset()
        if last:
            try:
                c.commit(offsets=[ck.TopicPartition(topic, p, o + 1) for p, o in last.items()],
                         asynchronous=False)
            except ck.KafkaException as e:  # a partition moved meanwhile: its next owner re-reads
                out({"commit_error": str(e)})
    c.close()
    out({"closed": True})


class Child:
    def __init__(self, name, args, topic, group):
        self.name, self.assigned, self.values = name, [], set()
        cmd = [sys.executable, os.path.abspath(__file__), "--member", group, topic, args.bootstrap]
        if args.debug:
            cmd.append("--debug")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            if "assigned" in ev:
                self.assigned = ev["assigned"]
            elif "rec" in ev:
                self.values.add(ev["rec"])
            elif "closed" not in ev:
                print(f"  [{self.name}] {ev}", file=sys.stderr, flush=True)

    def alive(self):
        return self.proc.poll() is None


def wait_until(cond, what, seconds=WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(20)
    return admin


class Feed:
    """Produces `tag-i` records round the partitions in the background."""

    def __init__(self, bootstrap, topic):
        self.producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        self.topic, self.produced, self.errors = topic, set(), []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        i = 0
        while not self.stop.is_set():
            for _ in range(12):
                v = f"r-{i}"
                self.producer.produce(self.topic, value=v, partition=i % len(PARTITIONS),
                                      on_delivery=lambda err, _m: err and self.errors.append(err))
                self.produced.add(v)
                i += 1
            self.producer.poll(0)
            time.sleep(0.1)
        assert self.producer.flush(20) == 0, "records undelivered after 20s"

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, f"delivery errors: {self.errors[:3]}"


def covered(children):
    flat = sorted(p for c in children for p in c.assigned)
    return flat == PARTITIONS and all(c.assigned for c in children)


def churn(args):
    topic, group = f"{args.prefix}churn", f"{args.prefix}churn_group"
    create_topic(args.bootstrap, topic, len(PARTITIONS))
    feed = Feed(args.bootstrap, topic)
    a, b = Child("A", args, topic, group), Child("B", args, topic, group)
    children = [a, b]
    try:
        wait_until(lambda: covered([a, b]), "A and B to share the partitions")
        c = Child("C", args, topic, group)
        children.append(c)
        wait_until(lambda: covered([a, b, c]), "late C to get partitions while A and B keep the rest")
        b.proc.send_signal(signal.SIGTERM)
        b.proc.wait(WAIT_S)
        wait_until(lambda: covered([a, c]), "A and C to take over what B left")
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(5)
        took = wait_until(lambda: covered([c]), "C to take over A's partitions after SIGKILL",
                          seconds=SESSION_S + 20) - killed
        feed.finish()
        wait_until(lambda: feed.produced <= set().union(*(x.values for x in children)),
                   "every produced record to be consumed")
        probe = ck.Consumer(conf(args.bootstrap, group, "classic", False))
        tps = [ck.TopicPartition(topic, p) for p in PARTITIONS]
        high = {p: probe.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1] for p in PARTITIONS}
        assert sum(high.values()) == len(feed.produced), f"high watermarks {high} for {len(feed.produced)}"

        def committed():
            return {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
        try:
            wait_until(committed_equals(committed, high), "committed offsets to reach the high watermarks")
        finally:
            probe.close()
        return f"{len(feed.produced)} records; takeover after SIGKILL in {took:.1f}s"
    finally:
        feed.stop.set()
        for x in children:
            if x.alive():
                x.proc.kill()


def committed_equals(committed, high):
    return lambda: committed() == high


def regex(args):
    first, later, other = f"{args.prefix}rx_a", f"{args.prefix}rx_b", f"{args.prefix}other"
    create_topic(args.bootstrap, first, 1)
    create_topic(args.bootstrap, other, 1)
    producer = ck.Producer({"bootstrap.servers": args.bootstrap})
    producer.produce(first, value="first")
    producer.produce(other, value="other")
    assert producer.flush(20) == 0, "records undelivered"
    c = ck.Consumer(conf(args.bootstrap, f"{args.prefix}rx_group", "consumer", args.debug))
    c.subscribe([f"^{args.prefix}rx_.*"])
    got = set()

    def read(want):
        for m in c.consume(100, 0.2):
            if not m.error():
                got.add(m.value().decode())
        return want <= got
    try:
        wait_until(lambda: read({"first"}), "the record of the matching topic")
        create_topic(args.bootstrap, later, 2)
        created = time.monotonic()
        producer.produce(later, value="later", partition=1)
        assert producer.flush(20) == 0, "records undelivered"
        took = wait_until(lambda: read({"first", "later"}), "the record of the topic created later") - created
        owned = sorted((tp.topic, tp.partition) for tp in c.assignment())
        assert owned == [(first, 0), (later, 0), (later, 1)], f"assignment {owned}"
        assert "other" not in got, "read a topic the expression does not match"
        return f"a matching topic created later read after {took:.1f}s"
    finally:
        c.close()


def static(args):
    topic, group = f"{args.prefix}static", f"{args.prefix}static_group"
    create_topic(args.bootstrap, topic, 4)

    def member(instance):
        c = ck.Consumer({**conf(args.bootstrap, group, "consumer", args.debug), "group.instance.id": instance})
        c.subscribe([topic])
        return c

    def owned(c):
        return sorted(tp.partition for tp in c.assignment())

    def polled(cs, cond):
        def check():
            for c in cs:
                c.poll(0.05)
            return cond()
        return check
    x, y = member("x"), member("y")
    back = None
    try:
        wait_until(polled([x, y], lambda: sorted(owned(x) + owned(y)) == [0, 1, 2, 3] and owned(x) and owned(y)),
                   "two static members to share the partitions")
        xs, ys = owned(x), owned(y)
        x.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            y.poll(0.1)
            assert owned(y) == ys, f"y took {owned(y)} while x was away"
        back = member("x")
        wait_until(polled([back, y], lambda: owned(back) == xs and owned(y) == ys),
                   f"x to come back to {xs} with y keeping {ys}")
        return f"x kept {xs} while away"
    finally:
        for c in (back, y):
            if c is not None:
                c.close()


def side_by_side(args):
    topic = f"{args.prefix}shared"
    admin = create_topic(args.bootstrap, topic, 4)
    producer = ck.Producer({"bootstrap.servers": args.bootstrap})
    want = {f"s-{i}" for i in range(400)}
    for v in want:
        producer.produce(topic, value=v)
    assert producer.flush(20) == 0, "records undelivered"
    groups = {"classic": f"{args.prefix}classic_group", "consumer": f"{args.prefix}consumer_group"}
    members = {proto: [ck.Consumer(conf(args.bootstrap, g, proto, args.debug)) for _ in range(2)]
               for proto, g in groups.items()}
    seen = {proto: set() for proto in groups}
    try:
        for ms in members.values():
            for m in ms:
                m.subscribe([topic])

        def poll_all():
            for proto, ms in members.items():
                for m in ms:
                    for msg in m.consume(100, 0.05):
                        if not msg.error():
                            seen[proto].add(msg.value().decode())
            return all(s == want for s in seen.values()) and all(
                sorted(tp.partition for m in ms for tp in m.assignment()) == [0, 1, 2, 3]
                and all(m.assignment() for m in ms) for ms in members.values())
        wait_until(poll_all, "both groups to read every record with both members assigned", seconds=60)

        def listed(types):
            result = admin.list_consumer_groups(types=types).result(20)
            return {g.group_id: g for g in result.valid}
        consumer_only = listed({ck.ConsumerGroupType.CONSUMER})
        classic_only = listed({ck.ConsumerGroupType.CLASSIC})
        assert groups["consumer"] in consumer_only and groups["classic"] not in consumer_only, consumer_only
        assert groups["classic"] in classic_only and groups["consumer"] not in classic_only, classic_only
        d = admin.describe_consumer_groups([groups["consumer"]])[groups["consumer"]].result(20)
        assert len(d.members) == 2, d
        assert d.type == ck.ConsumerGroupType.CONSUMER, d.type
        parts = sorted(tp.partition for m in d.members for tp in m.assignment.topic_partitions)
        assert parts == [0, 1, 2, 3], f"described assignment {parts}"
        return "400 records read by each group"
    finally:
        for ms in members.values():
            for m in ms:
                m.close()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        group, topic, bootstrap = sys.argv[2:5]
        member(bootstrap, group, topic, "--debug" in sys.argv)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--label", default="confluent")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    lib = _version(ck.libversion())
    print(f"# {args.label}: confluent-kafka {_version(ck.version())} / librdkafka {lib}", flush=True)
    if tuple(int(x) for x in lib.split(".")[:2]) < (2, 12):
        print(f"SKIP {args.label} consumer-protocol: librdkafka {lib} has no group.protocol=consumer", flush=True)
        os._exit(0)
    signal.signal(signal.SIGALRM, lambda *_: (print(f"FAIL {args.label} consumer-protocol: hung for 240s",
                                                    flush=True), os._exit(3)))
    signal.alarm(240)
    code = 0
    for name, run in (("churn", churn), ("regex", regex), ("static", static), ("side-by-side", side_by_side)):
        try:
            print(f"PASS {args.label} consumer-protocol {name} ({run(args)})", flush=True)
        except Exception as e:
            print(f"FAIL {args.label} consumer-protocol {name}: {type(e).__name__}: {e}", flush=True)
            code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
