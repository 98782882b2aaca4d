"""Runs fault scenarios against a pgbroker binary and checks their histories.

  run.py --bin target/release/pgbroker [--scenario NAME]... [--duration S] [--results FILE]

Each scenario starts its own PostgreSQL cluster and brokers, runs load
through real clients while injecting its fault repeatedly, then checks the
whole history. Exit status 1 when any check failed."""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (HERE, PYTHON, Failure, Harness, check, kill_group, log, read_jsonl,  # noqa: E402
                     require_sync_standby, wait_for)
from patroni import TIMINGS  # noqa: E402
from queue_run import queue_scenario  # noqa: E402
from stream import TOPIC, Stream  # noqa: E402
from txn_run import txn_scenario, txn_summary  # noqa: E402

# /healthz must turn unhealthy this soon after Postgres becomes unreachable
# (its own check times out after 2 s), and healthy this soon after it is back.
UNHEALTHY_WITHIN = 10.0
HEALTHY_WITHIN = 30.0
# More connection attempts than this per second of outage is a reconnect storm.
STORM_PER_SECOND = 50.0
# A broker's row in the node registry counts as live for `node_ttl` (10 s)
# after its last heartbeat, and brokers re-read the registry every 2 s: a
# dead broker must be gone from its peers' Metadata, as a node and as a
# partition leader, this soon after it died: those 12 s, plus slack for a
# loaded two-core machine (12 s were seen under load), and still well within
# Kafka's default session timeout of 45 s.
NODE_GONE_WITHIN = 20.0
# Once the live brokers' Metadata no longer names a dead broker, producers
# must write to the partitions it led through their new leaders this soon.
RESUMED_WITHIN = 30.0
# How many `pgbroker serve` processes share the database in the
# multi-broker scenario.
MULTI_BROKERS = 3


def wait_health(broker, status, within, what):
    try:
        return wait_for(f"/healthz {status} {what}", lambda: broker.health() == status, within, 0.1)
    except TimeoutError as e:
        raise Failure(f"{e}; last answer {broker.health()}") from None


def outage(s: Stream, rng, cause, end):
    """Shared by the Postgres and link faults: health must go down and come
    back, and the broker must neither die nor storm Postgres."""
    start = time.time()
    mono = time.monotonic()
    cause()
    unhealthy = wait_health(s.broker, 503, UNHEALTHY_WITHIN, "after the outage began")
    time.sleep(rng.uniform(*s.args.outage))
    down = time.monotonic() - mono
    attempts = s.proxy.attempts_between(mono, time.monotonic()) if s.proxy else None
    restored = time.time()
    end()
    healthy = wait_health(s.broker, 200, HEALTHY_WITHIN, "after the outage ended")
    check(s.broker.alive(), "broker exited during the outage")
    fault = {"at": start, "restored": restored, "down_s": down, "unhealthy_after_s": unhealthy,
             "healthy_after_s": healthy}
    if attempts is not None:
        fault["connect_attempts_per_s"] = attempts / down
        check(attempts / down <= STORM_PER_SECOND,
              f"reconnect storm: {attempts} connection attempts in {down:.1f}s of outage")
    return fault


def broker_kill(s: Stream, rng, sig=signal.SIGKILL):
    start = time.time()
    rc = s.broker.kill(sig, timeout=60)
    if sig == signal.SIGTERM:
        check(rc == 0, f"broker exited with {rc} after SIGTERM")
    stopped = time.time() - start
    time.sleep(rng.uniform(0, 1))
    restored = time.time()
    s.broker.start()
    return {"at": start, "restored": restored, "stop_s": stopped, "healthy_after_s": time.time() - restored}


def pg_kill(s: Stream, rng):
    return outage(s, rng, s.pg.kill, s.pg.start)


def link_cut(s: Stream, rng):
    return outage(s, rng, s.proxy.cut, s.proxy.restore)


def link_stall(s: Stream, rng):
    return outage(s, rng, s.proxy.stall, s.proxy.restore)


def embedded_kill(s: Stream, rng):
    """SIGKILL to the broker of `serve --embedded`, to its postmaster, or to
    both, in turn. A killed broker is started again and must stop the
    postmaster it left and start its own; a killed postmaster is started
    again by the running broker."""
    kind = ("broker", "postmaster", "both")[s.kills % 3]
    s.kills += 1
    b = s.broker
    pm = b.postmaster()
    check(pm is not None, "no embedded postmaster running")
    start = time.time()
    if kind in ("broker", "both"):
        b.kill(signal.SIGKILL, timeout=60)
    if kind in ("postmaster", "both"):
        os.kill(pm[0], signal.SIGKILL)
    time.sleep(rng.uniform(0, 1))
    restored = time.time()
    if kind == "postmaster":
        try:
            wait_for("the broker restarted its postmaster",
                     lambda: (b.postmaster() or (pm[0],))[0] != pm[0] and b.postmaster_ready(), HEALTHY_WITHIN, 0.1)
        except TimeoutError as e:
            raise Failure(str(e)) from None
        wait_health(b, 200, HEALTHY_WITHIN, "after the postmaster was restarted")
        check(b.alive(), "the broker exited when its postmaster was killed")
    else:
        b.start()
    return {"at": start, "restored": restored, "killed": kind, "healthy_after_s": time.time() - restored}


def failover(s: Stream, rng):
    """SIGKILL to the primary's postmaster and backends; after a detection
    delay (an HA manager's, such as Patroni's TTL) the synchronous standby
    is promoted. The broker, given both hosts, must find the new primary
    by itself. The old primary then returns as the new one's synchronous
    standby, ready for the next fault."""
    old, new = s.pg, s.standby
    # How far the standby's flushed WAL is behind the primary's, just
    # before the kill: what an asynchronous standby may lose.
    behind = old.sql("SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)), -1)"
                     " FROM pg_stat_replication").strip()
    start = time.time()
    old.kill()
    unhealthy = wait_health(s.broker, 503, UNHEALTHY_WITHIN, "after the primary died")
    time.sleep(rng.uniform(*s.args.outage))
    new.sql("SELECT pg_promote()")
    restored = time.time()
    healthy = wait_health(s.broker, 200, HEALTHY_WITHIN, "after the promotion")
    check(s.broker.alive(), "broker exited during the failover")
    check(new.is_primary(), "the standby was not promoted")
    old.make_standby_of(new)
    if s.sync:
        require_sync_standby(new)
    s.pg, s.standby = new, old
    return {"at": start, "restored": restored, "down_s": restored - start, "unhealthy_after_s": unhealthy,
            "healthy_after_s": healthy, "standby_behind_bytes": int(float(behind or -1))}


def patroni_failover(s: Stream, rng, whole_node=False):
    """SIGKILL to the postmaster of Patroni's leader; Patroni fails over to
    the other node and brings the old one back as its replica. The broker,
    given both hosts, must find the new primary by itself."""
    fault = s.cluster.fail_over(rng, lambda: {
        "healthy_after_s": wait_health(s.broker, 200, HEALTHY_WITHIN, "after the new leader was seen")}, whole_node)
    check(s.broker.alive(), "broker exited during the failover")
    return fault


def patroni_node_kill(s: Stream, rng):
    """The same with the leader's Patroni killed too, as when its machine
    dies: the other node waits for the leader lock to expire."""
    return patroni_failover(s, rng, whole_node=True)


def standby_kill(s: Stream, rng):
    """SIGKILL of the standby that serves the broker's reads (`--replica-url`),
    restarted after the outage. The standby must have served reads since the
    previous fault, the primary must serve them while it is down, and the
    standby must serve again within 30 s of its restart."""
    name = f"127.0.0.1:{s.standby.port}/postgres"
    before = s.broker.reads_by_server()
    check(before.get(name, 0) > s.replica_reads, f"the standby served no reads since the last fault: {before}")
    start = time.time()
    s.standby.kill()
    time.sleep(rng.uniform(*s.args.outage))
    during = s.broker.reads_by_server()
    check(during.get("primary", 0) > before.get("primary", 0),
          f"the primary served no reads while the standby was down: {before} then {during}")
    s.standby.start()
    restored = time.time()
    try:
        wait_for("the standby streaming again", lambda: s.pg.sql(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").strip() == "1", 60, 0.2)
    except TimeoutError as e:
        raise Failure(str(e)) from None
    # A standby that failed is left alone for 5 s (RETRY_AFTER), then used
    # again once it has replayed.
    try:
        wait_for("the standby serving reads again",
                 lambda: s.broker.reads_by_server().get(name, 0) > during.get(name, 0), 30, 0.2)
    except TimeoutError as e:
        raise Failure(str(e)) from None
    s.replica_reads = during.get(name, 0)
    return {"at": start, "restored": restored, "replica_reads": before.get(name, 0),
            "primary_reads": before.get("primary", 0), "serving_again_after_s": time.time() - restored}


def kafka_metadata(*brokers):
    """What each broker's Metadata answer says, in order: ({node id: (host,
    port)}, {partition of TOPIC: leader}), or None where it did not answer."""
    r = subprocess.run([PYTHON, os.path.join(HERE, "clients.py"), "metadata", TOPIC] + [b.bootstrap for b in brokers],
                       capture_output=True, text=True, timeout=60)
    answers = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    answers += [None] * (len(brokers) - len(answers))
    return [None if a is None else ({int(n): tuple(hp) for n, hp in a["brokers"].items()},
                                    {int(p): leader for p, leader in a["leaders"].items()}) for a in answers]


def node_of(peer, broker) -> tuple[int, list[int]]:
    """The node id `peer`'s Metadata gives `broker`, and the partitions it
    names that node the leader of."""
    def lookup():
        md = kafka_metadata(peer)[0]
        node = md and next((n for n, (_, port) in md[0].items() if port == broker.kafka_port), None)
        return None if node is None else (node, sorted(p for p, leader in md[1].items() if leader == node))

    found = []
    try:
        wait_for(f"{broker.name} in {peer.name}'s Metadata", lambda: found.append(lookup()) or found[-1] is not None,
                 30, 0.2)
    except TimeoutError as e:
        raise Failure(str(e)) from None
    return found[-1]


def names_node(peers, node: int) -> bool:
    """True unless every peer's Metadata names `node` neither as a broker
    nor as a leader (an unanswered request counts as naming it)."""
    return any(md is None or node in md[0] or node in md[1].values() for md in kafka_metadata(*peers))


def multi_broker_kill(s: Stream, rng):
    """SIGKILL to one of several brokers on one database, chosen at random,
    while clients hold all of them in their bootstrap lists. Every third
    kill (the first included) leaves the broker down until neither live
    broker's Metadata names it, as a node or as a partition leader, which
    must happen within NODE_GONE_WITHIN, and until a produce to a partition
    it led has been acknowledged by the new leader (RESUMED_WITHIN); the
    other kills restart it within a second. A restarted broker keeps its node id and must reappear in
    its peers' Metadata. Recovery is measured from the end of the fault
    (leadership moved, else the restart) to the next acknowledged produce
    to a partition the killed broker led."""
    b = rng.choice(s.brokers)
    others = [o for o in s.brokers if o is not b]
    node, led = node_of(others[0], b)
    s.kills += 1
    start = time.time()
    b.kill(signal.SIGKILL, timeout=60)
    fault = {"at": start, "killed": b.name, "node": node, "led": led}
    if s.kills % 3 == 1:
        try:
            wait_for(f"node {node} gone from the live brokers' Metadata",
                     lambda: not names_node(others, node), NODE_GONE_WITHIN, 0.1)
        except TimeoutError as e:
            raise Failure(str(e)) from None
        fault["moved"] = time.time()
        fault["leaders_moved_after_s"] = fault["moved"] - start
        if led:  # producers must move to the new leaders while this broker is still down
            try:
                wait_for(f"a produce to partitions {led} without {b.name}",
                         lambda: s.first_ack_after(fault["moved"], led) is not None, RESUMED_WITHIN, 0.2)
            except TimeoutError as e:
                raise Failure(str(e)) from None
    else:
        time.sleep(rng.uniform(0, 1))
    check(all(o.alive() for o in others), "a broker that was not killed exited")
    restored = time.time()
    b.start()
    fault["restored"] = restored
    fault["healthy_after_s"] = time.time() - restored
    check(node_of(others[0], b)[0] == node, f"{b.name} came back with another node id than {node}")
    fault["rejoined_after_s"] = time.time() - restored
    return fault


def consumer_kill(s: Stream, rng):
    name = rng.choice(sorted(n for n, p in s.consumers.items() if p.poll() is None))
    path = s.h.history(f"consumer-{name}.jsonl")

    def mid_batch():
        evs = read_jsonl(path)
        return bool(evs) and evs[-1].get("op") == "read"

    try:  # kill it between reading a batch and committing it
        wait_for("consumer mid-batch", mid_batch, 10, 0.005)
    except TimeoutError:
        pass
    start = time.time()
    kill_group(s.consumers[name])
    s.consumers[name].wait()
    time.sleep(rng.uniform(0, 1))
    restored = time.time()
    new = s.start_consumer(s.group_of[name])
    return {"at": start, "restored": restored, "killed": name, "started": new}


def stream_scenario(inject, via_proxy=False, embedded=False, min_faults=1, replicated=False, brokers=1, sync=True,
                    replica_reads=False, patroni=False, groups=1):
    def run(h: Harness, args, rng):
        s = Stream(h, args, via_proxy, embedded, replicated, brokers, sync, replica_reads, patroni, groups)
        time.sleep(2)
        faults = []
        end = time.monotonic() + args.duration
        while time.monotonic() < end or len(faults) < min_faults:
            time.sleep(rng.uniform(*args.gap))
            fault = inject(s, rng)
            log(" fault:", json.dumps({k: round(v, 2) if isinstance(v, float) and k not in ("at", "restored", "moved") else v
                                       for k, v in fault.items()}))
            faults.append(fault)
        time.sleep(2)
        if inject not in (broker_kill, broker_term, embedded_kill, multi_broker_kill):
            check(s.broker.starts == 1 and s.broker.alive(), "the broker exited")
        check(all(b.alive() for b in s.brokers), "a broker exited")
        # Only a failover to an asynchronous standby may lose records; the
        # standby that serves reads is asynchronous too, and loses nothing.
        tolerate = not sync and not replica_reads
        report = s.finish(tolerate=tolerate)
        if inject is consumer_kill:
            recovery = [read_after(s, f["restored"]) for f in faults]
        elif inject is multi_broker_kill:
            recovery = [s.first_ack_after(f.get("moved", f["restored"]), f["led"]) for f in faults if f["led"]]
        else:
            recovery = [s.first_ack_after(f["restored"]) for f in faults]
        if tolerate and any(r is None for r in recovery):
            # Producers whose acknowledged records were lost stop (a fatal
            # sequence error, as after an unclean election in Kafka).
            report["anomalies"].append("no acknowledged produce after a fault: the producers had stopped")
        else:
            check(all(r is not None for r in recovery), "no progress after a fault")
        report["recovery_s"] = recovery
        report["faults"] = faults
        if patroni:  # from the kill until the new primary acknowledged a produce
            report["failover_s"] = {"produce": [f["restored"] - f["at"] + r for f, r in zip(faults, recovery)
                                                if r is not None]}
        return report

    return run


def read_after(s: Stream, t):
    ts = [e["t"] for f in glob.glob(s.h.history("consumer-*.jsonl")) for e in read_jsonl(f)
          if e.get("op") == "read" and e["t"] >= t]
    return min(ts) - t if ts else None


def broker_term(s: Stream, rng):
    return broker_kill(s, rng, signal.SIGTERM)


SCENARIOS = {
    "broker-kill": stream_scenario(broker_kill),
    "broker-term": stream_scenario(broker_term),
    "pg-kill": stream_scenario(pg_kill, via_proxy=True),
    "link-cut": stream_scenario(link_cut, via_proxy=True),
    "link-stall": stream_scenario(link_stall, via_proxy=True),
    "consumer-kill": stream_scenario(consumer_kill),
    # The primary dies; its synchronous standby is promoted (pg_promote, as
    # an HA manager would); the broker has both hosts in its URL.
    "failover": stream_scenario(failover, replicated=True),
    # The same with an asynchronous standby: what a failover loses is
    # measured, not refused (see RELIABILITY.md).
    "failover-async": stream_scenario(failover, replicated=True, sync=False),
    # Three brokers on one database; one at a time is killed. At least three
    # faults: one that waits for leadership to move, two quick restarts.
    "multi-broker-kill": stream_scenario(multi_broker_kill, min_faults=3, brokers=MULTI_BROKERS),
    # An asynchronous standby serving reads (--replica-url, no record
    # cache) to five consumer groups is killed and restarted; writes go
    # on, and the primary serves the reads meanwhile.
    "replica-reads": stream_scenario(standby_kill, replicated=True, replica_reads=True, min_faults=2, sync=False,
                                     groups=5),
    # At least one fault of each kind: broker, postmaster, both.
    "embedded-kill": stream_scenario(embedded_kill, embedded=True, min_faults=3),
    "queue-worker-kill": queue_scenario("worker-kill"),
    "queue-pg-kill": queue_scenario("pg-kill"),
    "queue-failover": queue_scenario("failover"),
    # The same three under Patroni (two nodes and etcd): Patroni, not the
    # suite, notices the primary's death and promotes the other node.
    "patroni-failover": stream_scenario(patroni_failover, patroni=True),
    "patroni-failover-async": stream_scenario(patroni_failover, patroni=True, sync=False),
    "patroni-node-kill": stream_scenario(patroni_node_kill, patroni=True),
    "patroni-queue-failover": queue_scenario("patroni-failover"),
    # Transactional consume-transform-produce (txn_run.py).
    "txn-broker-kill": txn_scenario(broker_kill),
    "txn-pg-kill": txn_scenario(pg_kill, via_proxy=True),
    "txn-link-cut": txn_scenario(link_cut, via_proxy=True),
}


def summary(name, report, seconds):
    rec = [r for r in report.get("recovery_s", []) if r is not None]
    out = {"scenario": name, "date": time.strftime("%Y-%m-%d"), "seconds": round(seconds, 1),
           "faults": len(report.get("faults", []))}
    if "transactions" in report:
        out.update(txn_summary(report))
    elif "acknowledged" in report:
        out.update(acknowledged=report["acknowledged"], lost=sum(report["lost"].values()),
                   duplicated=report["duplicated_count"], redelivered=report["redelivered"],
                   client_errors=report["client_errors"])
    else:
        out.update(acknowledged=report["sent"], lost=report["lost"], duplicated=report["unexplained_duplicate_count"],
                   redelivered=report["redelivered"], dead_lettered=report["dead_lettered"])
        if report["crashes"]:
            out.update(redelivered_after_crash=report["redelivered_after_crash"], send_failed=report["send_failed"])
    if "anomalies" in report and report["anomalies"]:
        out["anomalies"] = [a[:200] for a in report["anomalies"]]
    behind = [f["standby_behind_bytes"] for f in report.get("faults", []) if "standby_behind_bytes" in f]
    if behind:
        out["standby_behind_max_bytes"] = max(behind)
    if rec:
        out.update(recovery_median_s=round(statistics.median(rec), 2), recovery_max_s=round(max(rec), 2))
    for op, vals in report.get("failover_s", {}).items():
        out[f"failover_{op}_median_s"] = round(statistics.median(vals), 2)
        out[f"failover_{op}_max_s"] = round(max(vals), 2)
    reads = [(f["replica_reads"], f["primary_reads"]) for f in report.get("faults", []) if "replica_reads" in f]
    if "reads_by_server" in report:  # the broker's counts once the groups had read everything
        by_server = report["reads_by_server"]
        out.update(replica_reads=by_server["standby"], primary_reads=by_server["primary"])
    elif reads:
        out.update(replica_reads=int(reads[-1][0]), primary_reads=int(reads[-1][1]))
    if "groups" in report:
        groups = report["groups"]
        out.update(groups=len(groups), read_per_group={g: report["readers"].get(g, 0) for g in groups})
    for key in ("unhealthy_after_s", "healthy_after_s", "connect_attempts_per_s", "ready_after_s",
                "leaders_moved_after_s", "promoted_after_s", "rejoined_after_s"):
        vals = [f[key] for f in report.get("faults", []) if key in f]
        if vals:
            out[key.replace("_s", "_max_s") if key.endswith("_s") else key + "_max"] = round(max(vals), 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--skip", action="append", default=[], choices=sorted(SCENARIOS), help="leave this scenario out when none is named")
    ap.add_argument("--duration", type=float, default=10, help="seconds of faults per scenario")
    ap.add_argument("--gap", type=float, nargs=2, default=[1.0, 3.0], help="seconds between faults (min max)")
    ap.add_argument("--outage", type=float, nargs=2, default=[1.0, 3.0], help="seconds Postgres or the link is down")
    ap.add_argument("--rate", type=float, default=200, help="messages per second per producer")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--results", help="append one JSON summary per scenario to this file")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs (they are kept on failure anyway)")
    ap.add_argument("--patroni-timing", choices=sorted(TIMINGS),
                    help="Patroni's ttl, loop_wait and retry_timeout: its defaults, or faster ones for a short run "
                         "(the default below 30 s of faults)")
    args = ap.parse_args()
    # A SIGTERM ends the run like a failure: what it started is stopped (the
    # Patroni scenarios' processes, in sessions of their own, would outlive it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.patroni_timing is None:
        args.patroni_timing = "defaults" if args.duration >= 30 else "fast"
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    failed = []
    chosen = args.scenario or [n for n in SCENARIOS if n not in args.skip]
    for name in chosen:
        log(f"== {name} (seed {seed})")
        h = Harness(args.bin, args.keep)
        ok = False
        start = time.monotonic()
        try:
            report = SCENARIOS[name](h, args, random.Random(seed))
            ok = True
            line = summary(name, report, time.monotonic() - start)
            line["binary"] = "release" if "/release/" in h.bin else "debug"
            if name.startswith("patroni-"):
                line["patroni_timing"] = args.patroni_timing
            log(" ok", json.dumps(line))
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(line) + "\n")
        except Exception as e:  # a failed check, or the harness gave up
            detail = "" if isinstance(e, Failure) else traceback.format_exc()
            log(f" FAILED {name}: {e}\n{detail}")
            failed.append(name)
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps({"scenario": name, "date": time.strftime("%Y-%m-%d"), "failed": True,
                                        "error": str(e)[:300]}) + "\n")
        finally:
            h.close(failed=not ok)
    if failed:
        log("failed:", " ".join(failed))
    ran = len(chosen)
    print(f"faults: {ran - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
