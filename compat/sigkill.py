#!/usr/bin/env python3
"""A consumer-group member dies by SIGKILL: confluent-kafka against a live
`pgbroker serve`.

    sigkill.py BOOTSTRAP PREFIX [--label NAME] [--debug]

Three member processes in one group share a 6-partition topic; one is killed
with SIGKILL while records flow. The other two must take over its partitions
within the session timeout (plus the few heartbeats a rebalance takes), every
produced record must be consumed at least once, and at the end the group's
committed offsets must equal the high watermarks.

Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA (the topic is
created with the pgbroker CLI). Prints one PASS or FAIL line; exits 1 on
failure.
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


def _version(v):
    """confluent-kafka 1.x answers (str, int), 2.x a str."""
    return v[0] if isinstance(v, tuple) else v


SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000
# Detection takes the session timeout; the survivors then learn of the
# rebalance at their next heartbeat and rejoin. Allow that, with room for a
# busy machine, and far below max.poll.interval.ms (300 s), the only other
# way the partitions could move.
TAKEOVER_LIMIT_S = SESSION_TIMEOUT_MS / 1000 + 3 * HEARTBEAT_MS / 1000 + 8
WAIT_SECONDS = 20
PARTITIONS = list(range(6))


def consumer_conf(bootstrap, group, debug):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "socket.timeout.ms": 10000,
    }
    if debug:
        conf["debug"] = "protocol,cgrp"
    return conf


def member(bootstrap, group, topic, debug):
    """Child process: consume, commit after every batch, report on stdout as
    JSON lines, stop when stdin closes."""
    c = ck.Consumer(consumer_conf(bootstrap, group, debug))
    c.subscribe([topic])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    out = lambda obj: print(json.dumps(obj), flush=True)
    assigned = None
    while not stop.is_set():
        msgs = c.consume(500, 0.3)
        now = sorted(tp.partition for tp in c.assignment())
        if now != assigned:
            assigned = now
            out({"assigned": now})
        last = {}
        for m in msgs:
            if m.error():
                out({"error": str(m.error())})
                continue
            out({"rec": [m.partition(), m.offset(), m.value().decode()]})
            last[m.partition()] = m.offset()
        if last:
            try:
                c.commit(offsets=[ck.TopicPartition(topic, p, o + 1) for p, o in last.items()],
                         asynchronous=False)
            except ck.KafkaException as e:  # may race a rebalance; the next owner re-reads
                out({"commit_error": str(e)})
    c.close()
    out({"closed": True})


class Child:
    def __init__(self, name, args, topic, group):
        self.name = name
        self.assigned, self.values, self.events = [], set(), []
        cmd = [sys.executable, os.path.abspath(__file__), "--member", group, topic, args.bootstrap, args.prefix]
        if args.debug:
            cmd.append("--debug")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            if "assigned" in ev:
                self.assigned = ev["assigned"]
            elif "rec" in ev:
                self.values.add(ev["rec"][2])
            elif "error" in ev or "commit_error" in ev:
                print(f"  [{self.name}] {ev}", file=sys.stderr, flush=True)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(WAIT_SECONDS)
        self.reader.join(5)


def wait_until(cond, what, seconds=WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def pgbroker(*args):
    cmd = [os.environ["PGBROKER_BIN"], "--database-url", os.environ["PGBROKER_DATABASE_URL"],
           "--schema", os.environ["PGBROKER_SCHEMA"], *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def scenario(args):
    topic, group = f"{args.prefix}kill", f"{args.prefix}killgroup"
    pgbroker("topic", "create", topic, "--partitions", "6")
    producer = ck.Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5,
                            "message.timeout.ms": 15000})
    produced = set()

    def produce(tag, n):
        errors = []
        for i in range(n):
            v = f"{tag}-{i}"
            producer.produce(topic, key=f"k{i % 23}", value=v,
                             on_delivery=lambda err, msg: err and errors.append(err))
            produced.add(v)
            producer.poll(0)
        assert producer.flush(20) == 0, "records undelivered after 20s"
        assert not errors, f"delivery errors: {errors[:3]}"

    def covered(children):
        flat = sorted(p for c in children for p in c.assigned)
        return flat == PARTITIONS and all(c.assigned for c in children)

    def seen(children):
        return produced <= set().union(*(c.values for c in children))

    children = [Child(n, args, topic, group) for n in ("A", "B", "C")]
    try:
        wait_until(lambda: covered(children) and all(len(c.assigned) == 2 for c in children),
                   "three members to get two partitions each")
        produce("before", 600)
        wait_until(lambda: seen(children), "the first 600 records to be consumed")

        victim, survivors = children[1], [children[0], children[2]]
        lost = list(victim.assigned)
        # Records in flight while the victim dies.
        t = threading.Thread(target=produce, args=("during", 600))
        t.start()
        time.sleep(0.2)
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(5)
        t.join(30)
        took = wait_until(lambda: covered(survivors), f"the survivors to take over partitions {lost}",
                          seconds=TAKEOVER_LIMIT_S + 10) - killed_at
        assert took <= TAKEOVER_LIMIT_S, (
            f"survivors took {took:.1f}s to cover all partitions after SIGKILL; "
            f"limit {TAKEOVER_LIMIT_S:.0f}s (session.timeout.ms={SESSION_TIMEOUT_MS})")
        produce("after", 300)
        wait_until(lambda: seen(children), "every produced record to be consumed at least once")

        probe = ck.Consumer(consumer_conf(args.bootstrap, group, False))
        tps = [ck.TopicPartition(topic, p) for p in PARTITIONS]
        high = {p: probe.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1] for p in PARTITIONS}
        assert sum(high.values()) == 1500, f"high watermarks {high} sum to {sum(high.values())}, want 1500"

        def committed():
            return {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
        try:
            wait_until(lambda: committed() == high, f"committed offsets to equal high watermarks {high}")
        except AssertionError:
            raise AssertionError(f"committed {committed()} != high watermarks {high}")
        for c in survivors:
            c.stop()
        final = committed()
        probe.close()
        assert final == high, f"after the survivors closed: committed {final}, want {high}"
        return f"takeover after SIGKILL in {took:.1f}s"
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()


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
    print(f"# {args.label}: confluent-kafka {_version(ck.version())} / librdkafka {_version(ck.libversion())}", flush=True)
    # A hang fails in seconds: the whole scenario has 90s.
    signal.signal(signal.SIGALRM, lambda *_: (print(f"FAIL {args.label} sigkill: hung for 90s", flush=True),
                                              os._exit(3)))
    signal.alarm(90)
    try:
        note = scenario(args)
        print(f"PASS {args.label} sigkill ({note})", flush=True)
        code = 0
    except Exception as e:
        print(f"FAIL {args.label} sigkill: {type(e).__name__}: {e}", flush=True)
        code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
