"""History checker for fault tests.

A history is a list of events (dicts), usually read from JSON-lines files
written by the writers and readers of a scenario. Two kinds are checked.

Streams (Kafka-style topics):

  {"op": "send", "value": V, "producer": P, "seq": N}
      a send was attempted (it may or may not have been stored)
  {"op": "ack", "value": V, "ok": true, "partition": p, "offset": o}
  {"op": "ack", "value": V, "ok": false, "error": "..."}
      the outcome the client reported for that send
  {"op": "assign", "reader": R, "session": S, "partitions": [p, ...]}
      a reader session was given partitions (starts a new epoch for them)
  {"op": "read", "reader": R, "session": S, "value": V, "partition": p, "offset": o}
      a reader saw a record

  "reader" names a group of sessions that together must see every
  acknowledged record (a consumer group, or one full scan). Each reader is
  checked on its own: what it missed, and, per session and partition,
  offsets that did not increase within one assignment. Given the reader
  of the final full scan, every record another reader read must be in that
  scan, at the same partition and offset: a reader was never shown a
  record the topic does not hold in the end (one the primary had not
  committed, when reads come from a standby).

Queues:

  {"op": "qsend", "value": V, "ok": true, "id": I}    (ok false: outcome unknown)
  {"op": "qrecv", "worker": W, "value": V, "id": I, "receipt": R,
   "attempt": n, "lease_expires": ms}                  (ms from the database clock)
  {"op": "qack", "worker": W, "receipts": [R, ...], "ok": bool}
  {"op": "qnack", "worker": W, "receipts": [R, ...], "ok": bool}  (ends the lease early)
  {"op": "qnack_start", "worker": W, "receipts": [R, ...]}
      a nack was begun; with no qnack after it (the worker was killed), its
      outcome is unknown, and it may have ended the lease early
  {"op": "qdead", "value": V, "id": I, "attempts": n}  (found in the dead-letter queue)
  {"op": "qleft", "value": V, "id": I}                 (still in the queue at the end)
  {"op": "qarchived", "value": V, "id": I, "attempts": n}  (acknowledged, per the archive)
  {"op": "qconfig", "visibility_ms": ms, "max_attempts": n}
  {"op": "pg_crash", "at": t, "ready": t}
      the whole Postgres cluster was SIGKILLed at `at` and answered again
      at `ready` (both in the clients' clock, seconds, like every "t")

Claims and acknowledgements commit with synchronous_commit off, so a
Postgres crash may undo one reported in the last moments before it: a lost
claim is a lease that ended at once without counting an attempt, a lost
acknowledgement leaves the message leased until its lease runs out. Either
way the message is delivered again (at-least-once), never lost. A
redelivery is put down to a crash only when the earlier delivery (or its
acknowledgement) was reported less than CRASH_WINDOW_S before a crash, or
between the crash and Postgres answering again, and the redelivery came
after the crash; it is then counted as "redelivered_after_crash". Sends
commit synchronously: a send that returned an id must survive any crash.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Iterable

# How long an asynchronous commit may stay unflushed: Postgres writes and
# flushes the WAL of such commits within three times wal_writer_delay
# (200 ms by default), and any synchronous commit (a send) flushes it
# sooner; the rest is room for a slow fsync on a loaded machine.
CRASH_WINDOW_S = 2.0


def load(paths: Iterable[str]) -> list[dict]:
    events = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        events.append(json.loads(line))
                    except json.JSONDecodeError:
                        # A process killed mid-write leaves a torn last line.
                        continue
    return events


def check_stream(events: list[dict], final: str | None = None) -> dict:
    """Returns a report: counts and examples of every anomaly. `final`
    names the reader whose reads are the final full scan, if any."""
    attempted = set()
    acked = {}  # value -> (partition, offset)
    producer_acks = defaultdict(list)  # (producer, partition) -> [(seq, offset, value)]
    seq_of = {}
    at_offset = defaultdict(set)  # (partition, offset) -> values seen there
    where = defaultdict(set)  # value -> {(partition, offset)}
    reads_by_reader = defaultdict(set)  # reader -> values seen
    records_read = defaultdict(set)  # reader -> {(partition, offset, value)}
    read_values = set()
    redelivered = 0
    unexplained_redelivery = []
    reordered = []
    # (reader, partition, offset) -> (session, epoch) of the first read
    first_read = {}
    epoch = defaultdict(int)  # (reader, session, partition) -> epoch number
    last_offset = {}  # (reader, session, partition, epoch) -> offset

    for e in events:
        op = e.get("op")
        if op == "send":
            attempted.add(e["value"])
            if "producer" in e and "seq" in e:
                seq_of[e["value"]] = (e["producer"], e["seq"])
        elif op == "ack" and e.get("ok"):
            v, p, o = e["value"], e["partition"], e["offset"]
            acked[v] = (p, o)
            at_offset[(p, o)].add(v)
            where[v].add((p, o))
            if v in seq_of:
                prod, seq = seq_of[v]
                producer_acks[(prod, p)].append((seq, o, v))
        elif op == "assign":
            for p in e["partitions"]:
                epoch[(e["reader"], e["session"], p)] += 1
        elif op == "read":
            r, s, v, p, o = e["reader"], e["session"], e["value"], e["partition"], e["offset"]
            reads_by_reader[r].add(v)
            records_read[r].add((p, o, v))
            at_offset[(p, o)].add(v)
            where[v].add((p, o))
            read_values.add(v)
            ep = epoch[(r, s, p)]
            key = (r, s, p, ep)
            if key in last_offset and o <= last_offset[key]:
                reordered.append({"reader": r, "session": s, "partition": p, "offset": o, "after": last_offset[key]})
            last_offset[key] = max(o, last_offset.get(key, -1))
            rk = (r, p, o)
            if rk in first_read:
                redelivered += 1
                if first_read[rk] == (s, ep):
                    unexplained_redelivery.append({"reader": r, "session": s, "partition": p, "offset": o})
                first_read[rk] = (s, ep)
            else:
                first_read[rk] = (s, ep)

    unexpected = read_values - attempted
    # A send's acknowledged position must be where it was read.
    offset_conflicts = [
        {"partition": p, "offset": o, "values": sorted(map(str, vs))} for (p, o), vs in at_offset.items() if len(vs) > 1
    ]
    duplicated = [{"value": v, "positions": sorted(ps)} for v, ps in where.items() if len(ps) > 1]
    for (prod, p), acks in producer_acks.items():
        acks.sort()
        for (s1, o1, _), (s2, o2, v2) in zip(acks, acks[1:]):
            if o2 <= o1:
                reordered.append({"producer": prod, "partition": p, "seq": s2, "offset": o2, "previous_offset": o1})
    lost = {}
    for r, seen in reads_by_reader.items():
        missing = sorted(v for v in acked if v not in seen)
        if missing:
            lost[r] = missing
    unscanned = []
    if final is not None:
        scanned = records_read.get(final, set())
        unscanned = sorted(({"reader": r, "partition": p, "offset": o, "value": v}
                            for r, recs in records_read.items() if r != final
                            for p, o, v in recs if (p, o, v) not in scanned),
                           key=lambda u: (u["reader"], u["partition"], u["offset"]))
    acked_total = len(acked)
    return {
        "attempted": len(attempted),
        "acknowledged": acked_total,
        "readers": {r: len(vs) for r, vs in reads_by_reader.items()},
        "lost": {r: len(vs) for r, vs in lost.items()},
        "lost_examples": {r: vs[:10] for r, vs in lost.items()},
        "unexpected": sorted(map(str, unexpected))[:10],
        "unexpected_count": len(unexpected),
        "duplicated": duplicated[:10],
        "duplicated_count": len(duplicated),
        "redelivered": redelivered,
        "unexplained_redelivery": unexplained_redelivery[:10],
        "unexplained_redelivery_count": len(unexplained_redelivery),
        "reordered": reordered[:10],
        "reordered_count": len(reordered),
        "offset_conflicts": offset_conflicts[:10],
        "offset_conflict_count": len(offset_conflicts),
        "unscanned": unscanned[:10],
        "unscanned_count": len(unscanned),
    }


def stream_failures(report: dict, readers: Iterable[str]) -> list[str]:
    """The anomalies that make a run fail. Every reader named must have read."""
    failures = []
    for r in readers:
        if r not in report["readers"]:
            failures.append(f"reader {r} read nothing")
    for r, n in report["lost"].items():
        failures.append(f"{n} acknowledged records never read by {r}: {report['lost_examples'][r]}")
    for key in ("unexpected", "duplicated", "unexplained_redelivery", "reordered", "offset_conflict", "unscanned"):
        n = report[f"{key}_count"]
        if n:
            examples = report["offset_conflicts" if key == "offset_conflict" else key]
            failures.append(f"{n} {key}: {examples}")
    return failures


def check_queue(events: list[dict]) -> dict:
    config = next((e for e in events if e.get("op") == "qconfig"), {})
    vt = config.get("visibility_ms")
    max_attempts = config.get("max_attempts")
    crashes = sorted((e["at"], e["ready"]) for e in events if e.get("op") == "pg_crash")
    sent_ok = defaultdict(set)  # value -> ids of acknowledged sends
    sent_any = set()
    send_failed = 0  # sends that errored: their outcome is unknown
    value_of = {}  # id -> value
    recvs = defaultdict(list)  # id -> [event]
    acked_receipts = set()
    ack_times = defaultdict(list)  # receipt -> times its acknowledgement was reported
    nacked_receipts = set()
    nack_begun = {}  # receipt -> time the latest nack of it began
    nack_settled = set()
    nack_failed = []  # (receipt, began, ended) of nacks that reported failure
    acked_ids = set()
    dead = {}
    left = set()
    archived = {}
    for e in events:
        op = e.get("op")
        if op == "qsend":
            sent_any.add(e["value"])
            if e.get("ok"):
                sent_ok[e["value"]].add(e["id"])
                value_of[e["id"]] = e["value"]
            else:
                send_failed += 1
        elif op == "qrecv":
            recvs[e["id"]].append(e)
            value_of.setdefault(e["id"], e["value"])
        elif op == "qack" and e.get("ok"):
            acked_receipts.update(e["receipts"])
            for rc in e["receipts"]:
                ack_times[rc].append(e.get("t"))
        elif op == "qnack":
            nack_settled.update(e["receipts"])
            if e.get("ok"):
                nacked_receipts.update(e["receipts"])
            else:
                for rc in e["receipts"]:
                    nack_failed.append((rc, nack_begun.get(rc), e.get("t")))
        elif op == "qnack_start":
            for rc in e["receipts"]:
                nack_begun[rc] = e.get("t")
        elif op == "qdead":
            dead[e["id"]] = e
            value_of.setdefault(e["id"], e["value"])
        elif op == "qleft":
            left.add(e["id"])
        elif op == "qarchived":
            archived[e["id"]] = e

    def crash_may_undo(t, before=None):
        """Whether a claim or acknowledgement reported at t may have been
        undone by a crash (that came before `before`, when given)."""
        if t is None:
            return False
        return any(at - CRASH_WINDOW_S < t < ready and (before is None or before > at) for at, ready in crashes)

    def nack_in_flight_at_crash(began, ended):
        # Begun after the kill, it cannot have reached Postgres.
        return began is not None and ended is not None and any(began < at <= ended for at, ready in crashes)

    # Acknowledgements a crash may have undone are not counted on.
    durable_acks = {rc for rc in acked_receipts if not all(crash_may_undo(t) for t in ack_times[rc])}
    receipt_owner = {r["receipt"]: i for i, rs in recvs.items() for r in rs}
    for rc in durable_acks:
        if rc in receipt_owner:
            acked_ids.add(receipt_owner[rc])

    # A nack that began but was never settled (the worker was killed), or
    # that failed because Postgres died under it, may have been applied.
    nack_unknown = set(nack_begun) - nack_settled
    nack_unknown |= {rc for rc, began, ended in nack_failed if nack_in_flight_at_crash(began, ended)}
    lost = []
    unexpected = []
    double_held = []
    unexplained_dup = []
    bad_dead = []
    redeliveries = 0
    after_crash = 0
    # Deliveries whose claim a crash may have undone: they counted no attempt.
    undone_claims = defaultdict(int)
    ack_not_applied = sorted(i for i in acked_ids if i not in archived)
    for v, ids in sent_ok.items():
        for i in ids:
            if i not in archived and i not in dead and i not in left:
                lost.append(v)
    for i, rs in recvs.items():
        if value_of.get(i) not in sent_any:
            unexpected.append(value_of.get(i))
        # In the order they happened (a claim a crash undid may be followed
        # by one with the same attempt number).
        rs = sorted(rs, key=lambda r: (r.get("t", 0), r["attempt"]))
        for a, b in zip(rs, rs[1:]):
            redeliveries += 1
            claim_undone = crash_may_undo(a.get("t"), b.get("t"))
            if claim_undone:
                undone_claims[i] += 1
            needs_crash = False
            lease_ended_early = a["receipt"] in nacked_receipts or a["receipt"] in nack_unknown
            if vt is not None and b["lease_expires"] - vt < a["lease_expires"] and not lease_ended_early:
                if claim_undone:
                    needs_crash = True
                else:
                    double_held.append({"id": i, "first": a["receipt"], "second": b["receipt"]})
            if a["receipt"] in acked_receipts:
                ack_undone = any(crash_may_undo(t, b.get("t")) for t in ack_times[a["receipt"]])
                if claim_undone or ack_undone:
                    needs_crash = True
                else:
                    unexplained_dup.append({"id": i, "acked": a["receipt"], "then": b["receipt"]})
            if b["attempt"] <= a["attempt"]:
                if claim_undone:
                    needs_crash = True
                else:
                    unexplained_dup.append({"id": i, "attempt_not_increasing": [a["attempt"], b["attempt"]]})
            if needs_crash:
                after_crash += 1
        if i in dead and i in acked_ids:
            bad_dead.append({"id": i, "why": "acknowledged and dead-lettered"})
    for i, a in archived.items():
        if i not in value_of or value_of[i] not in sent_any or a["value"] != value_of[i]:
            unexpected.append(a["value"])
        if len(recvs.get(i, [])) - undone_claims[i] > a["attempts"]:
            unexplained_dup.append({"id": i, "why": f"received {len(recvs[i])} times, archive says {a['attempts']}"})
    for i, d in dead.items():
        if i not in value_of or value_of[i] not in sent_any:
            unexpected.append(d["value"])
        seen = len(recvs.get(i, []))
        if max_attempts is not None and d["attempts"] != max_attempts:
            bad_dead.append({"id": i, "why": f"dead after {d['attempts']} attempts, max is {max_attempts}"})
        if seen - undone_claims[i] > d["attempts"]:
            bad_dead.append({"id": i, "why": f"received {seen} times, dead letter says {d['attempts']}"})
    # A value sent (and acknowledged) twice is two messages; stored twice
    # from one acknowledged send is a duplicate.
    dup_sends = [v for v, ids in sent_ok.items() if len(ids) > 1]
    return {
        "sent": sum(len(ids) for ids in sent_ok.values()),
        "send_failed": send_failed,
        "acked": len(acked_ids),
        "archived": len(archived),
        "ack_not_applied_count": len(ack_not_applied),
        "ack_not_applied": ack_not_applied[:10],
        "dead_lettered": len(dead),
        "left": len(left),
        "lost": len(lost),
        "lost_examples": sorted(map(str, lost))[:10],
        "unexpected_count": len(unexpected),
        "unexpected": unexpected[:10],
        "redelivered": redeliveries,
        "redelivered_after_crash": after_crash,
        "crashes": len(crashes),
        "double_held_count": len(double_held),
        "double_held": double_held[:10],
        "unexplained_duplicate_count": len(unexplained_dup) + len(dup_sends),
        "unexplained_duplicate": (unexplained_dup + [{"value": v} for v in dup_sends])[:10],
        "bad_dead_letter_count": len(bad_dead),
        "bad_dead_letter": bad_dead[:10],
    }


def queue_failures(report: dict) -> list[str]:
    failures = []
    if report["lost"]:
        failures.append(f"{report['lost']} acknowledged sends lost: {report['lost_examples']}")
    for key in ("unexpected", "double_held", "unexplained_duplicate", "bad_dead_letter", "ack_not_applied"):
        n = report[f"{key}_count"]
        if n:
            failures.append(f"{n} {key}: {report[key]}")
    return failures


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("stream", "queue"):
        print("usage: checker.py stream|queue HISTORY.jsonl...", file=sys.stderr)
        return 2
    events = load(argv[2:])
    if argv[1] == "stream":
        report = check_stream(events)
        failures = stream_failures(report, [])
    else:
        report = check_queue(events)
        failures = queue_failures(report)
    print(json.dumps(report, indent=2, default=str))
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
