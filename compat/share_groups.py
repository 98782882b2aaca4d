#!/usr/bin/env python3
"""Kafka's share groups (KIP-932): confluent-kafka's ShareConsumer (a
preview in librdkafka 2.15+) against a live `pgbroker serve`.

    share_groups.py BOOTSTRAP PREFIX [--label NAME] [--records N] [--debug]

Scenarios, one PASS or FAIL line each:

- exactly-once: four share consumer processes on a 2-partition topic, in
  implicit acknowledgement mode (every record polled is accepted), read N
  records (100,000 by default) produced before they start
  (`share.auto.offset.reset=earliest`, set with IncrementalAlterConfigs on
  the GROUP resource). Every record is delivered exactly once, with
  delivery count 1; the line reports records/s acknowledged.
- settle: one consumer in explicit mode releases, rejects or accepts each
  record by its value. Accepted and rejected records never come back;
  released ones come back with a higher delivery count until
  `share.delivery.count.limit` (3 here) archives them.
- sigkill: a consumer process acquires records and is killed by SIGKILL
  without acknowledging them. Another consumer gets those records only
  after `share.record.lock.duration.ms` (3 s here), with delivery count 2.

Every delivery of every scenario is kept as (partition, offset, delivery
count, consumer, time); the history check asserts that no record was
lost, that delivery counts of a record only grow, and that no record was
delivered to a second consumer while the first one's lock was live.
- read-committed: a group with `share.isolation.level=read_committed`
  reads a topic where one transactional producer aborted and another
  committed, while a third holds its transaction open: the consumer gets
  the committed records only, nothing past the open transaction until it
  commits, then its records.

librdkafka older than 2.15 has no share consumer: SKIP.
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
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

WAIT_S = 60


def _version(v):
    return v[0] if isinstance(v, tuple) else v


def conf(bootstrap, group, mode, debug):
    c = {"bootstrap.servers": bootstrap, "group.id": group, "share.acknowledgement.mode": mode}
    if debug:
        c["debug"] = "cgrp,fetch,protocol"
    return c


def setup(bootstrap, topic, partitions, group, settings):
    """Creates the topic and sets the group's configs."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(20)
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in settings.items()]
    for f in admin.incremental_alter_configs([ConfigResource(ResourceType.GROUP, group,
                                                             incremental_configs=entries)]).values():
        f.result(20)
    described = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)])
    for f in described.values():
        got = {k: e.value for k, e in f.result(20).items()}
        for k, v in settings.items():
            assert got.get(k) == v, f"group config {k}: {got.get(k)!r}, set {v!r}"
    return admin


def produce(bootstrap, topic, partitions, n):
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(30) == 0, "records left unsent"


class History:
    """Every delivery: (partition, offset) -> [(delivery count, consumer, time)]."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}

    def add(self, who, p, o, dc, t):
        with self.lock:
            self.seen.setdefault((p, o), []).append((dc, who, t))

    def check(self, expected, lock_s, settled_before_redelivery=False):
        """No record of `expected` (a set of (partition, offset)) lost;
        per record, delivery counts grow by one; a delivery to another
        consumer comes at least a lock duration after the one before it
        unless that one was settled (released) first."""
        missing = expected - set(self.seen)
        assert not missing, f"{len(missing)} records never delivered, e.g. {sorted(missing)[:5]}"
        for key, ds in self.seen.items():
            ds = sorted(ds, key=lambda d: d[0])
            for a, b in zip(ds, ds[1:]):
                assert b[0] == a[0] + 1, f"{key}: delivery counts {[d[0] for d in ds]}"
                if a[1] != b[1] and not settled_before_redelivery:
                    assert b[2] - a[2] >= lock_s - 0.5, \
                        f"{key}: {b[1]} got it {b[2] - a[2]:.2f}s after {a[1]}, under a live lock"


def member(bootstrap, group, topic, mode, debug):
    """Child process: poll, print each poll's records as one JSON line
    ([partition, offset, delivery count, value]); in explicit mode never
    acknowledge (the sigkill scenario). On SIGTERM close."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    c = ck.ShareConsumer(conf(bootstrap, group, mode, debug))
    c.subscribe([topic])
    while not stop.is_set():
        try:
            msgs = list(c.poll(0.5))
        except ck.KafkaException as e:
            print(json.dumps({"error": str(e)}), flush=True)
            if mode == "explicit":
                time.sleep(0.5)
            continue
        recs = []
        for m in msgs:
            if m.error():
                print(json.dumps({"error": str(m.error())}), flush=True)
                continue
            recs.append([m.partition(), m.offset(), m.delivery_count(), m.value().decode()])
        if recs:
            print(json.dumps({"t": time.time(), "recs": recs}), flush=True)
        if mode == "explicit" and recs:
            # Hold what was acquired; wait to be killed.
            stop.wait(3600)
    c.close()
    print(json.dumps({"closed": True}), flush=True)


class Child:
    def __init__(self, name, args, group, topic, mode, history):
        self.name, self.history, self.count, self.errors = name, history, 0, []
        cmd = [sys.executable, os.path.abspath(__file__), "--member", group, topic, args.bootstrap, mode]
        if args.debug:
            cmd.append("--debug")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            if "recs" in ev:
                for p, o, dc, _v in ev["recs"]:
                    self.history.add(self.name, p, o, dc, ev["t"])
                self.count += len(ev["recs"])
            elif "closed" in ev:
                self.closed.set()
            else:
                self.errors.append(ev)
                print(f"  [{self.name}] {ev}", file=sys.stderr, flush=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not close within 20s")


def wait_until(cond, what, seconds=WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def exactly_once(args):
    topic, group, n = f"{args.prefix}eo", f"{args.prefix}eo_group", args.records
    setup(args.bootstrap, topic, 2, group, {"share.auto.offset.reset": "earliest"})
    produce(args.bootstrap, topic, 2, n)
    history = History()
    children = [Child(f"c{i}", args, group, topic, "implicit", history) for i in range(4)]
    try:
        wait_until(lambda: len(history.seen) >= n, f"{n} records", seconds=max(WAIT_S, n // 500))
        time.sleep(2)  # anything delivered twice would show now
    finally:
        for c in children:
            c.stop()
    expected = {(i % 2, i // 2) for i in range(n)}
    history.check(expected, lock_s=30)
    twice = [k for k, ds in history.seen.items() if len(ds) > 1]
    assert not twice, f"{len(twice)} records delivered more than once, e.g. {twice[:3]}"
    assert all(ds[0][0] == 1 for ds in history.seen.values()), "a first delivery with a count above 1"
    times = [d[2] for ds in history.seen.values() for d in ds]
    rate = n / max(max(times) - min(times), 1e-3)
    per = sorted(c.count for c in children)
    assert sum(per) == n and per[-1] < n, f"records per consumer {per}: not shared"
    return f"{n} records once each by 4 consumers {per}, {rate:,.0f} records/s"


def settle(args):
    topic, group = f"{args.prefix}settle", f"{args.prefix}settle_group"
    limit = 3
    setup(args.bootstrap, topic, 1, group, {"share.auto.offset.reset": "earliest",
                                             "share.delivery.count.limit": str(limit)})
    produce(args.bootstrap, topic, 1, 30)
    history = History()
    kinds = {0: ck.AcknowledgeType.RELEASE, 1: ck.AcknowledgeType.REJECT, 2: ck.AcknowledgeType.ACCEPT}
    c = ck.ShareConsumer(conf(args.bootstrap, group, "explicit", args.debug))
    c.subscribe([topic])
    deadline = time.monotonic() + WAIT_S
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in c.poll(0.5) if not m.error()]
            for m in msgs:
                history.add("settler", m.partition(), m.offset(), m.delivery_count(), time.time())
                c.acknowledge(m, kinds[int(m.value()) % 3])
            if msgs:
                c.commit_sync()
                quiet_since = None
            elif len(history.seen) == 30:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 3:
                    break
    finally:
        c.close()
    history.check({(0, o) for o in range(30)}, lock_s=30, settled_before_redelivery=True)
    for (_, o), ds in history.seen.items():
        counts = sorted(d[0] for d in ds)
        want = list(range(1, limit + 1)) if o % 3 == 0 else [1]
        assert counts == want, f"offset {o} (kind {o % 3}) delivered with counts {counts}, expected {want}"
    return f"released records came back {limit - 1} times then were archived; rejected and accepted ones never"


def sigkill(args):
    topic, group = f"{args.prefix}kill", f"{args.prefix}kill_group"
    lock_s = 3
    setup(args.bootstrap, topic, 1, group, {"share.auto.offset.reset": "earliest",
                                             "share.record.lock.duration.ms": str(lock_s * 1000)})
    produce(args.bootstrap, topic, 1, 200)
    history = History()
    victim = Child("victim", args, group, topic, "explicit", history)
    wait_until(lambda: victim.count > 0, "the victim's first records")
    held = {k for k, ds in history.seen.items() if ds[0][1] == "victim"}
    took = min(d[2] for ds in history.seen.values() for d in ds)
    victim.proc.kill()
    victim.proc.wait(10)
    c = ck.ShareConsumer(conf(args.bootstrap, group, "implicit", args.debug))
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for m in c.poll(0.5):
                if not m.error():
                    history.add("survivor", m.partition(), m.offset(), m.delivery_count(), time.time())
            if all(len(history.seen.get(k, [])) >= 2 for k in held) and len(history.seen) == 200:
                break
    finally:
        c.close()
    history.check({(0, o) for o in range(200)}, lock_s=lock_s)
    back = [history.seen[k][-1] for k in held]
    assert all(d[1] == "survivor" and d[0] == 2 for d in back), f"redeliveries of the victim's records: {back[:3]}"
    first_back = min(d[2] for d in back)
    assert first_back - took >= lock_s - 0.5, f"came back {first_back - took:.2f}s after, under the lock"
    return f"{len(held)} held records came back {first_back - took:.1f}s later with delivery count 2"


def transaction(bootstrap, topic, tid, values, commit):
    """One transaction of `values`; `commit` None leaves it open and
    returns the producer."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": tid})
    p.init_transactions(20)
    p.begin_transaction()
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    assert p.flush(20) == 0, "records left unsent"
    if commit is None:
        return p
    if commit:
        p.commit_transaction(20)
    else:
        p.abort_transaction(20)
    return None


def read_committed(args):
    topic, group = f"{args.prefix}rc", f"{args.prefix}rc_group"
    setup(args.bootstrap, topic, 1, group, {"share.auto.offset.reset": "earliest",
                                             "share.isolation.level": "read_committed"})
    transaction(args.bootstrap, topic, f"{args.prefix}rc_aborted", [f"a{i}" for i in range(10)], False)
    transaction(args.bootstrap, topic, f"{args.prefix}rc_committed", [f"c{i}" for i in range(10)], True)
    held = transaction(args.bootstrap, topic, f"{args.prefix}rc_open", [f"o{i}" for i in range(5)], None)
    got = []
    c = ck.ShareConsumer(conf(args.bootstrap, group, "implicit", args.debug))
    c.subscribe([topic])

    def read_until(n, quiet_s):
        deadline, quiet_since = time.monotonic() + WAIT_S, None
        while time.monotonic() < deadline:
            msgs = [m for m in c.poll(0.5) if not m.error()]
            got.extend(m.value().decode() for m in msgs)
            if len(got) >= n:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > quiet_s:
                    return

    try:
        read_until(10, 3)
        committed = [f"c{i}" for i in range(10)]
        assert got == committed, f"before the open transaction ends: {got}"
        held.commit_transaction(20)
        read_until(15, 1)
    finally:
        c.close()
    assert got == committed + [f"o{i}" for i in range(5)], f"after its commit: {got}"
    return "aborted records never delivered; the open transaction held back until its commit"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        group, topic, bootstrap, mode = sys.argv[2:6]
        member(bootstrap, group, topic, mode, "--debug" in sys.argv)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--label", default="confluent")
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    lib = _version(ck.libversion())
    print(f"# {args.label}: confluent-kafka {_version(ck.version())} / librdkafka {lib}", flush=True)
    if tuple(int(x) for x in lib.split(".")[:2]) < (2, 15) or not hasattr(ck, "ShareConsumer"):
        print(f"SKIP {args.label} share-groups: librdkafka {lib} has no share consumer", flush=True)
        os._exit(0)
    signal.signal(signal.SIGALRM, lambda *_: (print(f"FAIL {args.label} share-groups: hung for 600s",
                                                    flush=True), os._exit(3)))
    signal.alarm(600)
    code = 0
    for name, run in (("exactly-once", exactly_once), ("settle", settle), ("sigkill", sigkill),
                      ("read-committed", read_committed)):
        try:
            print(f"PASS {args.label} share-groups {name} ({run(args)})", flush=True)
        except Exception as e:
            print(f"FAIL {args.label} share-groups {name}: {type(e).__name__}: {e}", flush=True)
            code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
