"""The transactional scenarios: consume-transform-produce workers with
Kafka transactions under a fault (see txn_clients.py for the workload and
txn_checker.py for the checks).

A scenario fills the input topic, starts a read_committed and a
read_uncommitted reader on the output topic, then three workers, and
injects its fault repeatedly. Once the faults are over and every input
record has been processed, the workers stop, the readers read to the end,
and a fresh read_committed reader reads the whole output topic."""

from __future__ import annotations

import glob
import signal
import subprocess
import time

from harness import VENV_PYTHON, Failure, Harness, check, kill_group, log, read_jsonl, wait_for
from txn_checker import CHECKS, check_txn, txn_failures

INPUT, OUTPUT, GROUP = "in", "out", "txg"
WORKERS = 3
# One transaction in ten is aborted on purpose (and its batch processed again).
ABORT_EVERY = 10
READERS = ("rc", "ru", "final")


class TxnStream:
    """The brokers, Postgres and clients of one transactional scenario; the
    fault functions of run.py use its `broker`, `pg`, `proxy` and `args`."""

    def __init__(self, h: Harness, args, via_proxy: bool):
        self.h, self.args = h, args
        self.kills = 0
        self.pg = h.postgres()
        self.proxy = h.proxy(self.pg.port) if via_proxy else None
        port = self.proxy.port if self.proxy else self.pg.port
        self.broker = h.broker(f"postgres://postgres@127.0.0.1:{port}/postgres")
        self.broker.start()
        h.cli(self.pg.url, ["topic", "create", INPUT, "--partitions", "3"])
        h.cli(self.pg.url, ["topic", "create", OUTPUT, "--partitions", "4"])
        # Per worker, records per second (a tenth of --rate: each input record
        # costs a transaction a share of its commit). The input outlasts the
        # faults (their last gap and outage included), so that work is left
        # after the last one and its recovery can be measured.
        self.rate = args.rate / 10
        count = int(self.rate * WORKERS * (args.duration + args.gap[1] + args.outage[1]))
        fill = self.client("fill", [self.broker.bootstrap, INPUT, str(count), h.history("fill.jsonl")], "fill")
        check(fill.wait(180) == 0, "filling the input topic failed")
        self.readers = {r: self.reader(r, iso) for r, iso in (("rc", "read_committed"), ("ru", "read_uncommitted"))}
        self.workers = [
            self.client("worker", [self.broker.bootstrap, INPUT, OUTPUT, GROUP, f"w{i}", h.history(f"worker-w{i}.jsonl"),
                                   str(ABORT_EVERY), str(self.rate)], f"w{i}")
            for i in range(WORKERS)
        ]

    def client(self, role, args, name):
        return self.h.client(role, args, name, script="txn_clients.py", python=VENV_PYTHON)

    def reader(self, name, isolation, *extra):
        return self.client("reader", [self.broker.bootstrap, OUTPUT, name, isolation,
                                      self.h.history(f"reader-{name}.jsonl"), *extra], name)

    def events(self):
        return [e for f in sorted(glob.glob(self.h.history("*.jsonl"))) for e in read_jsonl(f)]

    def processed(self, before: float = float("inf")) -> bool:
        """Whether every input record's transaction committed (before `before`)."""
        events = self.events()
        inputs = {e["value"] for e in events if e.get("op") == "input"}
        committed = {e["txn"] for e in events
                     if e.get("op") == "txn_end" and e["outcome"] == "committed" and e["t"] < before}
        done = {i for e in events if e.get("op") == "txn_begin" and e["txn"] in committed for i in e["inputs"]}
        return inputs <= done

    def stop(self, procs, what, timeout):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(p)
                raise Failure(f"{what} did not stop within {timeout}s") from None
            check(rc == 0, f"{what} exited with {rc}")

    def finish(self) -> dict:
        check(all(w.poll() is None for w in self.workers), "a worker exited during the faults")
        try:
            wait_for("every input record processed", self.processed, 120 + self.args.duration, 1.0)
        except TimeoutError as e:
            log(e)  # the checker says which
        self.stop(self.workers, "a worker", 120)
        self.stop(self.readers.values(), "a reader", 180)
        final = self.reader("final", "read_committed", "--until-end")
        check(final.wait(180) == 0, "the final read_committed reader did not reach the end")
        events = self.events()
        report = check_txn(events)
        errors = [e for e in events if e.get("op") == "client_error"]
        report["client_errors"] = len(errors)
        failures = txn_failures(report, READERS)
        fatal = [e["error"] for e in errors if e.get("fatal")]
        if fatal:
            log(f" {len(fatal)} fatal client errors (the worker started a new producer):", fatal[:3])
        report["fatal_client_errors"] = len(fatal)
        if report["exactly_once"] != report["inputs"]:
            failures.append(f"{report['inputs'] - report['exactly_once']} input records without exactly one effect")
        if not report["aborted_deliberately"] or not report["committed"]:
            failures.append("the workload committed or aborted nothing")
        if failures:
            raise Failure("; ".join(failures))
        return report

    def first_commit_after(self, t: float):
        ts = [e["t"] for e in self.events() if e.get("op") == "txn_end" and e["outcome"] == "committed" and e["t"] >= t]
        return min(ts) - t if ts else None


def txn_scenario(inject, via_proxy=False):
    def run(h: Harness, args, rng):
        s = TxnStream(h, args, via_proxy)
        time.sleep(2)
        faults = []
        end = time.monotonic() + args.duration
        while time.monotonic() < end or not faults:
            time.sleep(rng.uniform(*args.gap))
            fault = inject(s, rng)
            log(" fault:", {k: round(v, 2) if isinstance(v, float) and k not in ("at", "restored") else v
                            for k, v in fault.items()})
            faults.append(fault)
        report = s.finish()
        recovery = [s.first_commit_after(f["restored"]) for f in faults]
        # A fault after the last input record was processed has nothing to
        # recover; any other must be followed by a commit.
        check(all(r is not None or s.processed(before=f["restored"]) for r, f in zip(recovery, faults)),
              "no transaction committed after a fault")
        report["recovery_s"] = recovery
        report["faults"] = faults
        return report

    return run


def txn_summary(report: dict) -> dict:
    """The fields of a transactional scenario's summary line."""
    out = {k: report[k] for k in ("inputs", "transactions", "committed", "aborted", "aborted_deliberately",
                                  "unknown_outcome", "exactly_once", "client_errors", "fatal_client_errors")}
    out.update({k: report[f"{k}_count"] for k in CHECKS})
    out["outputs_read"] = report["readers"].get("final", 0)
    return out
