#!/usr/bin/env python3
"""How long partitions go unowned when a consumer joins a group: Kafka's
consumer group protocol (KIP-848, `group.protocol=consumer`) against the
classic protocol with eager (`range`) and cooperative (`cooperative-sticky`)
assignment, with the same confluent-kafka consumers against a live
`pgbroker serve`.

    rebalance_pause.py BOOTSTRAP PREFIX [--rounds N] [--consumers 6] [--partitions 24]
                       [--out results/rebalance-pause-<time>.json] [--markdown docs/bench/rebalance-pause.md]

Per round and protocol: a fresh topic and group; CONSUMERS members join and
settle (every partition owned, nothing moving for 3 s); then one more member
joins. Every member records, per partition, when it was given it (after
the assignment callback) and when it gave it up (the revocation callback).
A partition that moved is unowned from its revocation to its assignment to
the next owner; one that did not move never is. Reported per round: how many
partitions paused, the longest and median pause among them, and the time
from the join to the newcomer's first partition and to a settled group.
All members heartbeat every second (`heartbeat.interval.ms` for the classic
protocol, the group config `consumer.heartbeat.interval.ms` for KIP-848) and
poll every 50 ms.
"""

import argparse
import json
import statistics
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

PROTOCOLS = {
    "classic-eager": {"partition.assignment.strategy": "range", "heartbeat.interval.ms": 1000,
                      "session.timeout.ms": 10000},
    "classic-cooperative": {"partition.assignment.strategy": "cooperative-sticky",
                            "heartbeat.interval.ms": 1000, "session.timeout.ms": 10000},
    "consumer (KIP-848)": {"group.protocol": "consumer"},
}
SETTLE_S = 3.0
WAIT_S = 90


class Member(threading.Thread):
    """One consumer polling in its own thread, logging ownership changes."""

    def __init__(self, name, bootstrap, group, topic, extra, log):
        super().__init__(daemon=True)
        self.name, self.log = name, log
        self.stop = threading.Event()
        self.owned = set()
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", **extra}
        self.topic = topic

    def _assigned(self, consumer, parts):
        now = time.monotonic()
        for p in parts:
            self.owned.add(p.partition)
            self.log.append((now, self.name, "assign", p.partition))

    def _revoked(self, consumer, parts):
        now = time.monotonic()
        for p in parts:
            self.owned.discard(p.partition)
            self.log.append((now, self.name, "revoke", p.partition))

    def run(self):
        c = ck.Consumer(self.conf)
        c.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)
        while not self.stop.is_set():
            c.poll(0.05)
        c.close()


def settled(members, partitions, since, log):
    """True once every partition has exactly one owner and nothing moved
    for SETTLE_S."""
    owners = [p for m in members for p in m.owned]
    if sorted(owners) != list(range(partitions)):
        return False
    last = max((e[0] for e in log), default=since)
    return time.monotonic() - max(last, since) >= SETTLE_S


def wait(cond, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {WAIT_S}s")


def one_round(args, protocol, n):
    slug = f"rb{n}_{list(PROTOCOLS).index(protocol)}"
    topic, group = f"{args.prefix}{slug}", f"{args.prefix}{slug}_g"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
        f.result(20)
    if protocol.startswith("consumer"):
        entry = ConfigEntry("consumer.heartbeat.interval.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        for f in admin.incremental_alter_configs([ConfigResource(ResourceType.GROUP, group,
                                                                 incremental_configs=[entry])]).values():
            f.result(20)
    log = []
    members = [Member(f"m{i}", args.bootstrap, group, topic, PROTOCOLS[protocol], log)
               for i in range(args.consumers)]
    for m in members:
        m.start()
    start = time.monotonic()
    wait(lambda: settled(members, args.partitions, start, log), "settled group before the join")
    joined = time.monotonic()
    newcomer = Member("new", args.bootstrap, group, topic, PROTOCOLS[protocol], log)
    newcomer.start()
    members.append(newcomer)
    wait(lambda: newcomer.owned and settled(members, args.partitions, joined, log), "settled group after the join")
    done = time.monotonic() - SETTLE_S
    for m in members:
        m.stop.set()
    for m in members:
        m.join(30)
    after = [e for e in log if e[0] >= joined]
    pauses = {}
    for p in range(args.partitions):
        events = sorted(e for e in after if e[3] == p)
        revoked = None
        for t, _, kind, _ in events:
            if kind == "revoke" and revoked is None:
                revoked = t
            elif kind == "assign" and revoked is not None:
                pauses[p] = pauses.get(p, 0.0) + (t - revoked)
                revoked = None
    first = min((e[0] for e in after if e[1] == "new" and e[2] == "assign"), default=done)
    moved = sorted(pauses.values())
    return {
        "protocol": protocol, "round": n, "consumers": args.consumers, "partitions": args.partitions,
        "paused_partitions": len(moved),
        "max_pause_ms": round(1000 * max(moved, default=0.0), 1),
        "median_pause_ms": round(1000 * statistics.median(moved), 1) if moved else 0.0,
        "newcomer_first_partition_ms": round(1000 * (first - joined), 1),
        "settled_ms": round(1000 * (max(e[0] for e in after) - joined), 1) if after else 0.0,
    }


def markdown(rows, args):
    out = [
        "# Rebalance pause: one consumer joins a group",
        "",
        f"{args.consumers} confluent-kafka {ck.version()[0]} consumers (librdkafka {ck.libversion()[0]}) "
        f"on {args.partitions} partitions, then one more; {args.rounds} rounds per protocol, medians "
        "(max over rounds in brackets). Generated by `compat/rebalance_pause.py`; a partition is paused "
        "from its revocation by one member to its assignment to the next.",
        "",
        "| protocol | partitions paused | longest pause (ms) | median pause (ms) | newcomer's first partition (ms) | group settled (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for protocol in PROTOCOLS:
        rs = [r for r in rows if r["protocol"] == protocol]
        if not rs:
            continue

        def cell(key):
            vals = [r[key] for r in rs]
            return f"{statistics.median(vals):g} ({max(vals):g})"
        out.append(f"| {protocol} | {cell('paused_partitions')} | {cell('max_pause_ms')} | "
                   f"{cell('median_pause_ms')} | {cell('newcomer_first_partition_ms')} | {cell('settled_ms')} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=6)
    ap.add_argument("--partitions", type=int, default=24)
    ap.add_argument("--out")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    rows = []
    for n in range(args.rounds):
        for protocol in PROTOCOLS:
            r = one_round(args, protocol, n)
            print(json.dumps(r), flush=True)
            rows.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    text = markdown(rows, args)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
