"""The queue scenarios: a sender and three CLI workers on a queue with a
dead-letter queue, under a fault (a worker killed, Postgres killed, a
failover by hand or by Patroni); then the queue is drained and the history
checker (checker.py) compares what was sent with what was archived,
dead-lettered or left."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import threading
import time

from checker import check_queue, load, queue_failures
from harness import Failure, Harness, check, kill_group, log, read_jsonl, require_sync_standby, wait_for
from patroni import patroni_cluster


def queue_scenario(fault):
    """A sender and three CLI workers on a queue with a dead-letter queue,
    while `fault` ("worker-kill", "pg-kill", "failover" or
    "patroni-failover") strikes repeatedly; then the queue is drained and
    its archive, contents and dead letters checked."""

    def run(h: Harness, args, rng):
        if fault == "patroni-failover":
            patroni = patroni_cluster(h, args, sync=True)
            pg, url = patroni.leader(), patroni.url
        else:
            pg = h.postgres()
            url = pg.url
        # For "failover": the standby, and the clients given both hosts.
        cluster = {"primary": pg}
        if fault == "failover":
            cluster["standby"] = h.postgres("standby", primary=pg)
            require_sync_standby(pg)
            url = (f"postgres://postgres@127.0.0.1:{pg.port},127.0.0.1:{cluster['standby'].port}"
                   "/postgres?target_session_attrs=read-write")
        vt_ms, max_attempts = 2000, 3
        h.cli(url, ["queue", "create", "jobs.dlq"])
        h.cli(url, ["queue", "create", "jobs", "--visibility-timeout", f"{vt_ms}ms", "--max-attempts",
                    str(max_attempts), "--dead-letter", "jobs.dlq", "--archive-retention", "1d", "--backoff-base",
                    "100ms"])
        os.makedirs(h.history(""), exist_ok=True)
        sends = open(h.history("sender.jsonl"), "a", buffering=1)
        sends.write(json.dumps({"op": "qconfig", "visibility_ms": vt_ms, "max_attempts": max_attempts}) + "\n")
        crashes = open(h.history("crashes.jsonl"), "a", buffering=1)
        stop = threading.Event()
        send_errors = []

        last_sent = [0.0]

        def sender():
            n = 0
            pause = 0.0  # after a failed send, like a real sender: 50 ms, doubling to 1 s
            while not stop.is_set():
                values = [f"{'poison' if (n + i) % 25 == 7 else 'job'}-{n + i}" for i in range(5)]
                n += 5
                try:
                    ids = h.cli(url, ["queue", "send", "jobs"], "\n".join(values) + "\n").split()
                    for v, i in zip(values, ids):
                        sends.write(json.dumps({"op": "qsend", "value": v, "ok": True, "id": int(i),
                                                "t": time.time()}) + "\n")
                    last_sent[0] = time.time()
                    pause = 0.0
                except Exception as e:  # not acknowledged: the outcome of those sends is unknown
                    send_errors.append(str(e))
                    for v in values:
                        sends.write(json.dumps({"op": "qsend", "value": v, "ok": False, "t": time.time()}) + "\n")
                    pause = min(max(pause * 2, 0.05), 1.0)
                time.sleep(1.0 / args.rate * 5 + pause)

        count = [0]
        workers = {}

        def start_worker():
            count[0] += 1
            name = f"w{count[0]}"
            workers[name] = h.client("qworker", [h.bin, url, "jobs", name, h.history(f"worker-{name}.jsonl")], name)

        def kill_worker():
            name = rng.choice(sorted(n for n, p in workers.items() if p.poll() is None))
            path = h.history(f"worker-{name}.jsonl")

            def holding():
                evs = read_jsonl(path)
                return bool(evs) and evs[-1].get("op") == "qrecv"

            try:  # kill it while it holds leases it has not settled
                wait_for("worker holding leases", holding, 10, 0.005)
            except TimeoutError:
                pass
            start = time.time()
            kill_group(workers[name])
            workers[name].wait()
            evs = read_jsonl(path)
            settled = {r for e in evs if e.get("op") in ("qack", "qnack") for r in e["receipts"]}
            held = {e["id"] for e in evs if e.get("op") == "qrecv" and e["receipt"] not in settled}
            start_worker()
            log(" fault: killed", name, "holding", len(held))
            return {"at": start, "restored": start, "killed": name, "held": sorted(held)}

        def kill_postgres():
            start = time.time()
            pg.kill()
            time.sleep(rng.uniform(*args.outage))
            restored = time.time()
            pg.start()
            ready = time.time()
            crashes.write(json.dumps({"op": "pg_crash", "at": start, "ready": ready}) + "\n")
            check(all(p.poll() is None for p in workers.values()), "a queue worker exited during the outage")
            log(f" fault: Postgres killed, down {restored - start:.2f}s, answering {ready - restored:.2f}s later")
            return {"at": start, "restored": restored, "ready_after_s": ready - restored}

        def fail_over():
            old, new = cluster["primary"], cluster["standby"]
            start = time.time()
            old.kill()
            time.sleep(rng.uniform(*args.outage))
            new.sql("SELECT pg_promote()")
            restored = time.time()
            crashes.write(json.dumps({"op": "pg_crash", "at": start, "ready": restored}) + "\n")
            check(all(p.poll() is None for p in workers.values()), "a queue worker exited during the failover")
            old.make_standby_of(new)
            require_sync_standby(new)
            cluster["primary"], cluster["standby"] = new, old
            log(f" fault: primary killed, standby promoted {restored - start:.2f}s later")
            return {"at": start, "restored": restored}

        def patroni_fail_over():
            f = patroni.fail_over(rng)
            ready = f["at"] + f["promoted_after_s"]
            crashes.write(json.dumps({"op": "pg_crash", "at": f["at"], "ready": ready}) + "\n")
            check(all(p.poll() is None for p in workers.values()), "a queue worker exited during the failover")
            cluster["primary"] = patroni.leader()
            log(f" fault: Patroni failed over from {f['killed']} in {f['promoted_after_s']:.2f}s")
            return f

        inject = {"worker-kill": kill_worker, "pg-kill": kill_postgres, "failover": fail_over,
                  "patroni-failover": patroni_fail_over}[fault]
        for _ in range(3):
            start_worker()
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        faults = []
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            time.sleep(rng.uniform(*args.gap))
            faults.append(inject())
        time.sleep(1)
        try:  # the sender backs off after failures; let it get one send in after the last fault
            wait_for("a send after the last fault", lambda: last_sent[0] > faults[-1].get("restored", faults[-1]["at"]),
                     30, 0.1)
        except (TimeoutError, IndexError) as e:
            log(e)
        stop.set()
        thread.join(30)
        sends.close()
        crashes.close()

        def drained():
            st = json.loads(h.cli(url, ["queue", "stats", "jobs", "--format", "json"]))
            return st["ready"] + st["in_flight"] + st["delayed"] == 0

        try:
            wait_for("queue drained", drained, 120, 0.5)
        except TimeoutError as e:
            log(e)
        failures = []
        if fault != "worker-kill" and not all(p.poll() is None for p in workers.values()):
            failures.append("a queue worker exited")
        for p in workers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in workers.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(p)
        pg = cluster["primary"]
        with open(h.history("final.jsonl"), "w") as f:
            q = ("SELECT json_build_object('op', {op}, 'id', id, 'value', convert_from(body, 'UTF8'), "
                 "'attempts', {att}) FROM pgbroker.{view} WHERE queue = '{queue}'")
            for line in pg.sql(q.format(op="'qarchived'", att="attempts", view="queue_archived",
                                        queue="jobs")).splitlines():
                f.write(line + "\n")
            for line in pg.sql(q.format(op="'qleft'", att="attempts", view="queue_contents",
                                        queue="jobs")).splitlines():
                f.write(line + "\n")
            for line in pg.sql(q.format(op="'qdead'", att="dead_attempts", view="queue_contents",
                                        queue="jobs.dlq")).splitlines():
                f.write(line + "\n")
        events = load(sorted(glob.glob(h.history("*.jsonl"))))
        report = check_queue(events)
        failures += queue_failures(report)
        if report["left"]:
            failures.append(f"{report['left']} messages still in the queue after 120 s of draining")
        # Sends fail while Postgres is down (they are not acknowledged, and
        # not counted as such); with Postgres up, none may.
        if send_errors and fault == "worker-kill":
            failures.append(f"{len(send_errors)} sends failed: {send_errors[:3]}")
        if fault == "worker-kill":
            recovery = worker_kill_recovery(events, faults)
        else:
            recovery = [queue_progress_after(events, f["restored"]) for f in faults]
            if any(r is None for r in recovery):
                failures.append("no sends or acknowledgements after a restart")
        if failures:
            raise Failure("; ".join(failures))
        report["recovery_s"] = recovery
        report["faults"] = faults
        if fault == "patroni-failover":  # from the kill until the new primary took a send, and an ack
            report["failover_s"] = {op: [first_after(events, op, f["restored"]) + f["restored"] - f["at"]
                                         for f in faults] for op in ("qsend", "qack")}
        return report

    return run


def first_after(events, op, t):
    """Seconds from t to the first successful `op` after it."""
    return min(e["t"] for e in events if e.get("op") == op and e.get("ok") and e.get("t", 0) >= t) - t


def worker_kill_recovery(events, faults):
    """From a kill until every message the worker held was delivered again."""
    recv = {}
    for e in events:
        if e.get("op") == "qrecv":
            recv.setdefault(e["id"], []).append(e["t"])
    recovery = []
    for f in faults:
        # A held message may have been acked by a racing ack before the kill
        # landed; the checker's archive accounting covers it.
        later = [t for t in (min((t for t in recv.get(i, []) if t > f["at"]), default=None) for i in f["held"])
                 if t is not None]
        if later:
            recovery.append(max(later) - f["at"])
    return recovery


def queue_progress_after(events, t):
    """From t until a send has returned an id and a worker's acknowledgement
    has succeeded again, or None."""
    first = {}
    for e in events:
        if e.get("op") in ("qsend", "qack") and e.get("ok") and e.get("t", 0) >= t:
            first[e["op"]] = min(first.get(e["op"], e["t"]), e["t"])
    return max(first.values()) - t if len(first) == 2 else None
