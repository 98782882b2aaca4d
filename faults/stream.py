"""The load of the stream scenarios (run.py): producers on one topic, one
or more consumer groups reading it, then a full scan that the checker
holds every group's reads against."""

from __future__ import annotations

import glob
import json
import signal
import subprocess
import time

from checker import check_stream, load, stream_failures
from harness import Failure, Harness, check, kill_group, log, read_jsonl, require_sync_standby, wait_for
from patroni import patroni_cluster

TOPIC = "t"
GROUP = "g"
# Consumers in each group.
GROUP_SIZE = 2
# The final drain waits while the groups read on, for this long at most,
# and gives up after this long without a new record read.
DRAIN_WITHIN = 600.0
DRAIN_STALLED = 60.0


def group_names(groups: int) -> list[str]:
    """The consumer groups' ids: GROUP alone, or g0, g1, ..."""
    return [GROUP] if groups == 1 else [f"{GROUP}{i}" for i in range(groups)]


class Tail:
    """The events appended to the history files matching a pattern since
    the previous call (a line still being written is left for the next)."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.pos: dict[str, int] = {}

    def new(self):
        for path in sorted(glob.glob(self.pattern)):
            with open(path, "rb") as f:
                f.seek(self.pos.get(path, 0))
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    self.pos[path] = self.pos.get(path, 0) + len(line)
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue


class Stream:
    """Load on one topic: producers, `groups` consumer groups of
    GROUP_SIZE consumers each, then a full scan."""

    def __init__(self, h: Harness, args, via_proxy: bool, embedded: bool = False, replicated: bool = False,
                 brokers: int = 1, sync: bool = True, replica_reads: bool = False, patroni: bool = False,
                 groups: int = 1):
        self.h, self.args = h, args
        self.kills = 0
        self.sync = sync
        self.serves_replica_reads = replica_reads
        self.replica_reads = 0.0
        if patroni:
            # Two nodes under Patroni; the broker is given both.
            self.pg, self.proxy = None, None
            self.cluster = patroni_cluster(h, args, sync)
            self.broker = h.broker(self.cluster.url)
            self.broker.start()
            url = self.cluster.url
        elif replicated:
            # A primary and its standby, synchronous unless `sync` is off;
            # the broker is given both and finds the primary by
            # `target_session_attrs=read-write`.
            self.proxy = None
            self.pg = h.postgres()
            self.standby = h.postgres("standby", primary=self.pg)
            if sync:
                require_sync_standby(self.pg)
            self.broker = h.broker(f"postgres://postgres@127.0.0.1:{self.pg.port},127.0.0.1:{self.standby.port}"
                                   "/postgres?target_session_attrs=read-write")
            if replica_reads:
                # Without the record cache, every fetch reads Postgres.
                self.broker.extra = ["--replica-url", self.standby.url, "--cache-bytes-per-partition", "0"]
            self.broker.start()
            url = self.pg.url
        elif embedded:
            self.pg, self.proxy = None, None
            self.broker = h.embedded_broker()
            self.broker.start()
            url = self.broker.database_url()
        else:
            self.pg = h.postgres()
            self.proxy = h.proxy(self.pg.port) if via_proxy else None
            port = self.proxy.port if self.proxy else self.pg.port
            names = ["broker"] if brokers == 1 else [f"broker{i}" for i in range(brokers)]
            self.brokers = [h.broker(f"postgres://postgres@127.0.0.1:{port}/postgres", name) for name in names]
            for b in self.brokers:
                b.start()
            self.broker = self.brokers[0]
            url = self.pg.url
        if not hasattr(self, "brokers"):
            self.brokers = [self.broker]
        h.cli(url, ["topic", "create", TOPIC, "--partitions", "3"])
        self.producers = [
            h.client("producer", [self.bootstrap(i), TOPIC, f"p{i}", h.history(f"producer-p{i}.jsonl"),
                                  str(args.rate)], f"producer-p{i}")
            for i in range(2)
        ]
        self.groups = group_names(groups)
        self.sessions = 0
        self.consumers = {}
        self.group_of = {}  # consumer session -> its group
        for group in self.groups:
            for _ in range(GROUP_SIZE):
                self.start_consumer(group)

    def bootstrap(self, i: int = 0) -> str:
        """Every broker, starting from the i-th (modulo their number), so
        that clients spread over them."""
        order = self.brokers[i % len(self.brokers):] + self.brokers[:i % len(self.brokers)]
        return ",".join(b.bootstrap for b in order)

    def start_consumer(self, group: str = GROUP) -> str:
        """A new consumer session in `group`; its name."""
        self.sessions += 1
        name = f"c{self.sessions}"
        self.group_of[name] = group
        self.consumers[name] = self.h.client(
            "consumer", [self.bootstrap(self.sessions), TOPIC, group, name,
                         self.h.history(f"consumer-{name}.jsonl")], name)
        return name

    def histories(self):
        return sorted(glob.glob(self.h.history("*.jsonl")))

    def drain(self, acked: set, tolerate: bool):
        """Waits until every group has read every acknowledged record, or
        (where losses are tolerated: what was lost never comes) until the
        groups have read nothing new for 10 s; gives up after DRAIN_STALLED
        without a new read, the checker then says what is missing."""
        tail = Tail(self.h.history("consumer-*.jsonl"))
        seen = {g: set() for g in self.groups}
        progress = [0, time.monotonic()]  # records the groups have read, and when that last grew

        def caught_up():
            for e in tail.new():
                if e.get("op") == "read" and e.get("reader") in seen:
                    seen[e["reader"]].add(e["value"])
            total = sum(len(vs) for vs in seen.values())
            if total > progress[0]:
                progress[:] = [total, time.monotonic()]
            quiet = time.monotonic() - progress[1]
            if quiet > DRAIN_STALLED:
                raise TimeoutError(f"the groups read nothing new for {DRAIN_STALLED:.0f} s: "
                                   + ", ".join(f"{g} {len(acked - vs)} behind" for g, vs in seen.items()))
            return all(acked <= vs for vs in seen.values()) or (tolerate and quiet > 10)

        try:
            wait_for("consumer groups caught up", caught_up, DRAIN_WITHIN, 1.0)
        except TimeoutError as e:
            log(e)

    def primary_scan_broker(self):
        """Where the scan reads from the primary alone: with a standby
        serving reads, the read counts are kept and the broker is restarted
        without it (SIGTERM, which must exit 0)."""
        if not self.serves_replica_reads:
            return None
        reads = self.broker.reads_by_server()
        standby = f"127.0.0.1:{self.standby.port}/postgres"
        counts = {"standby": int(reads.get(standby, 0)), "primary": int(reads.get("primary", 0))}
        check(self.broker.kill(signal.SIGTERM, timeout=60) == 0, "the broker did not exit 0 after SIGTERM")
        i = self.broker.extra.index("--replica-url")
        self.broker.extra = self.broker.extra[:i] + self.broker.extra[i + 2:]
        self.broker.start()
        return counts

    def finish(self, tolerate: bool = False) -> dict:
        """Stops the clients, scans the topic and checks the histories; an
        anomaly fails the run unless `tolerate` (the asynchronous failover,
        where losing the last acknowledged writes is what is measured), in
        which case the anomalies are returned under "anomalies" (a producer
        that lost its idempotent sequence to lost writes stops with a fatal
        error, and is one)."""
        for p in self.producers:
            p.send_signal(signal.SIGTERM)
        exited = []
        for i, p in enumerate(self.producers):
            rc = p.wait(330)
            if rc != 0:
                exited.append(f"producer p{i} exited with {rc} (undelivered messages or a fatal error;"
                              " see its history)")
        check(tolerate or not exited, "; ".join(exited))
        acked = {e["value"] for f in glob.glob(self.h.history("producer-*.jsonl")) for e in read_jsonl(f)
                 if e.get("op") == "ack" and e.get("ok")}
        self.drain(acked, tolerate)
        for p in self.consumers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.consumers.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(p)
        reads = self.primary_scan_broker()
        scan = self.h.client("scan", [self.bootstrap(), TOPIC, self.h.history("scan.jsonl")], "scan")
        check(scan.wait(180) == 0, "scan did not reach the end of the topic")
        report = check_stream(load(self.histories()), final="scan")
        report["groups"] = list(self.groups)
        if reads is not None:
            report["reads_by_server"] = reads
            after = self.broker.reads_by_server()
            check(set(after) <= {"primary"}, f"the final scan was not read from the primary alone: {after}")
        failures = exited + stream_failures(report, self.groups + ["scan"])
        errors = [e for f in self.histories() for e in read_jsonl(f) if e.get("op") == "client_error"]
        report["client_errors"] = len(errors)
        report["fatal_client_errors"] = [e["error"] for e in errors if e.get("fatal")]
        if report["fatal_client_errors"]:
            failures.append(f"fatal client errors: {report['fatal_client_errors'][:5]}")
        if failures and not tolerate:
            raise Failure("; ".join(failures))
        report["anomalies"] = failures
        return report

    def first_ack_after(self, t: float, partitions=None):
        """Seconds from t to the next acknowledged produce (to one of
        `partitions`, when given), or None."""
        ts = [e["t"] for f in glob.glob(self.h.history("producer-*.jsonl")) for e in read_jsonl(f)
              if e.get("op") == "ack" and e.get("ok") and e["t"] >= t
              and (partitions is None or e.get("partition") in partitions)]
        return min(ts) - t if ts else None
