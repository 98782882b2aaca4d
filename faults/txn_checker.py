"""History checker for the transactional fault scenarios.

The workload (txn_clients.py): an input topic holds numbered records; N
workers in one consumer group read it (read_committed) and, per batch, run
one transaction that writes two output records per input record (to
several partitions of the output topic) and sends the input offsets to
the transaction; most commit, some abort on purpose. Readers that are in
no group read the output topic from the beginning, read_committed or
read_uncommitted.

Events (JSON lines, any order between files):

  {"op": "input", "value": "i-7", "partition": p, "offset": o}
      an input record was stored
  {"op": "txn_begin", "worker": W, "txn": T, "inputs": [V, ...], "outputs": [V, ...]}
      a transaction was begun; it writes exactly `outputs`
  {"op": "txn_end", "txn": T, "outcome": "committed" | "aborted", "deliberate": bool}
      the client reported the outcome; a transaction with no txn_end has
      an unknown outcome (its commit may or may not have taken effect)
  {"op": "assign", "reader": R, "session": S, "isolation": I, "partitions": [p, ...]}
  {"op": "read", "reader": R, "session": S, "isolation": I, "value": V, "partition": p, "offset": o}
  {"op": "reader_end", "reader": R, "isolation": I, "ends": {p: high watermark}}
      the reader read every partition to its end (it is "complete")

An output value is "T:INPUT:J"; the transaction that wrote it is T.

The checks, each counted (all must be 0):

  aborted_read     G1a: a read_committed reader saw a record of a
                   transaction whose abort was acknowledged
  unexpected       a reader saw a value no transaction wrote
  lost             a record of a transaction whose commit was acknowledged
                   is missing from a complete reader (either isolation)
  torn             a read_committed reader saw some records of a
                   transaction but not others it read past (a complete
                   reader reads past all of them)
  duplicate        one value stored at two positions, or one input record's
                   effect visible from two transactions to one reader
  inconsistent_offset  two readers saw different values at one position
  nonmonotonic     a reader's offsets in a partition went backwards (or
                   repeated) within one assignment
  unprocessed      exactly-once output: an input record whose effect a
                   complete read_committed reader does not see at all
                   (with `duplicate`, each input's effect is seen exactly once)

The report's `exactly_once` is the number of input records whose effect
every complete read_committed reader sees from exactly one transaction;
it must equal `inputs`.
"""

from __future__ import annotations

from collections import defaultdict


def txn_of(value: str) -> str:
    return value.split(":", 1)[0]


def input_of(value: str) -> str | None:
    parts = value.split(":")
    return parts[1] if len(parts) == 3 else None


def check_txn(events: list[dict]) -> dict:
    inputs = set()
    outputs = {}  # txn -> list of output values
    txn_inputs = {}  # txn -> list of input values
    outcome = {}  # txn -> "committed" | "aborted"
    deliberate = 0
    isolation = {}  # reader -> isolation level
    complete = set()
    reads = defaultdict(set)  # reader -> values seen
    max_read = defaultdict(lambda: -1)  # (reader, partition) -> highest offset read
    at = defaultdict(set)  # (partition, offset) -> values seen there
    where = defaultdict(set)  # value -> positions seen
    epoch = defaultdict(int)  # (reader, session, partition) -> assignment number
    last = {}  # (reader, session, partition, epoch) -> last offset read
    nonmonotonic = []
    for e in events:
        op = e.get("op")
        if op == "input":
            inputs.add(e["value"])
        elif op == "txn_begin":
            outputs[e["txn"]] = list(e["outputs"])
            txn_inputs[e["txn"]] = list(e["inputs"])
        elif op == "txn_end":
            outcome[e["txn"]] = e["outcome"]
            deliberate += bool(e.get("deliberate")) and e["outcome"] == "aborted"
        elif op == "assign":
            isolation[e["reader"]] = e.get("isolation", "read_committed")
            for p in e["partitions"]:
                epoch[(e["reader"], e["session"], p)] += 1
        elif op == "reader_end":
            complete.add(e["reader"])
            isolation.setdefault(e["reader"], e.get("isolation", "read_committed"))
        elif op == "read":
            r, s, v, p, o = e["reader"], e["session"], e["value"], e["partition"], e["offset"]
            isolation.setdefault(r, e.get("isolation", "read_committed"))
            reads[r].add(v)
            at[(p, o)].add(v)
            where[v].add((p, o))
            max_read[(r, p)] = max(max_read[(r, p)], o)
            key = (r, s, p, epoch[(r, s, p)])
            if key in last and o <= last[key]:
                nonmonotonic.append({"reader": r, "partition": p, "offset": o, "after": last[key]})
            last[key] = o if key not in last else max(o, last[key])

    written = {v for outs in outputs.values() for v in outs}
    rc = [r for r in reads if isolation.get(r) == "read_committed"]
    aborted_read = sorted({v for r in rc for v in reads[r] if outcome.get(txn_of(v)) == "aborted"})
    unexpected = sorted({v for vs in reads.values() for v in vs if v not in written})
    inconsistent = [{"partition": p, "offset": o, "values": sorted(vs)} for (p, o), vs in sorted(at.items())
                    if len(vs) > 1]
    duplicate = [{"value": v, "positions": sorted(map(list, ps))} for v, ps in sorted(where.items()) if len(ps) > 1]

    lost = {}
    for r in sorted(complete):
        missing = [v for t, o in outcome.items() if o == "committed" for v in outputs.get(t, []) if v not in reads[r]]
        if missing:
            lost[r] = missing

    torn = {}  # txn -> example
    for r in rc:
        seen_txns = {txn_of(v) for v in reads[r]} & set(outputs)
        for t in sorted(seen_txns):
            for v in outputs[t]:
                if v in reads[r]:
                    continue
                if r in complete:
                    read_past = True
                else:  # only if the missing record's position is known and behind the reader
                    read_past = any(max_read[(r, p)] > o for p, o in where.get(v, ()))
                if read_past:
                    torn.setdefault(t, {"txn": t, "reader": r, "missing": v,
                                        "outcome": outcome.get(t, "unknown")})

    unprocessed = {}
    exactly_once = {}  # reader -> inputs whose effect it sees from exactly one transaction
    for r in sorted(complete & set(rc)):
        effects = defaultdict(set)  # input -> txns whose output for it this reader saw
        for v in reads[r]:
            i = input_of(v)
            if i is not None:
                effects[i].add(txn_of(v))
        for i, ts in sorted(effects.items()):
            if len(ts) > 1:
                duplicate.append({"input": i, "reader": r, "txns": sorted(ts)})
        exactly_once[r] = sum(1 for i in inputs if len(effects.get(i, ())) == 1)
        missing = sorted(i for i in inputs if i not in effects)
        if missing:
            unprocessed[r] = missing

    committed = sum(1 for o in outcome.values() if o == "committed")
    aborted = sum(1 for o in outcome.values() if o == "aborted")
    return {
        "inputs": len(inputs),
        "transactions": len(outputs),
        "committed": committed,
        "aborted": aborted,
        "aborted_deliberately": deliberate,
        "unknown_outcome": len(outputs) - committed - aborted,
        "readers": {r: len(vs) for r, vs in sorted(reads.items())},
        "complete_readers": sorted(complete),
        "aborted_read_count": len(aborted_read),
        "aborted_read": aborted_read[:10],
        "unexpected_count": len(unexpected),
        "unexpected": unexpected[:10],
        "lost_count": sum(len(vs) for vs in lost.values()),
        "lost": {r: vs[:10] for r, vs in lost.items()},
        "torn_count": len(torn),
        "torn": list(torn.values())[:10],
        "duplicate_count": len(duplicate),
        "duplicate": duplicate[:10],
        "inconsistent_offset_count": len(inconsistent),
        "inconsistent_offset": inconsistent[:10],
        "nonmonotonic_count": len(nonmonotonic),
        "nonmonotonic": nonmonotonic[:10],
        "unprocessed_count": sum(len(vs) for vs in unprocessed.values()),
        "unprocessed": {r: vs[:10] for r, vs in unprocessed.items()},
        "exactly_once": min(exactly_once.values(), default=0),
    }


CHECKS = ("aborted_read", "unexpected", "lost", "torn", "duplicate", "inconsistent_offset", "nonmonotonic",
          "unprocessed")


def txn_failures(report: dict, complete_readers=()) -> list[str]:
    """The anomalies that fail a run; each reader named must have read to
    the end of every partition."""
    failures = [f"reader {r} did not read to the end" for r in complete_readers
                if r not in report["complete_readers"]]
    for key in CHECKS:
        n = report[f"{key}_count"]
        if n:
            failures.append(f"{n} {key}: {report[key]}")
    return failures
