"""pgbroker's SQL functions through psycopg 3: send, receive, ack and nack
on a queue, take in a rolled-back and a committed transaction, refusals with their SQLSTATEs, and produce to a topic inside a
transaction that is rolled back once and committed once.

    psycopg_client.py DATABASE_URL SCHEMA QUEUE TOPIC EXPECTED_FILE

Writes the records it committed, one "key value" line each, to
EXPECTED_FILE. Prints PASS or FAIL lines; exits 1 on any failure.
"""
import sys

import psycopg
from psycopg import sql

url, schema, queue, topic, expected_path = sys.argv[1:]
failures = 0


def check(name, fn):
    global failures
    try:
        fn()
        print(f"PASS psycopg {name}")
    except Exception as e:  # report every scenario, then fail the run
        failures += 1
        print(f"FAIL psycopg {name}: {type(e).__name__}: {e}")


def fn(name):
    """A function of pgbroker's schema, quoted by psycopg."""
    return sql.Identifier(schema, name)


conn = psycopg.connect(url, autocommit=True)


def queue_round_trip():
    conn.execute(sql.SQL("SELECT {}(%s, %s)").format(fn("send")), (queue, "resize 1.png"))
    conn.execute(sql.SQL("SELECT {}(%s, %s::bytea, priority => 5)").format(fn("send")), (queue, b"\x00\xff"))
    rows = conn.execute(
        sql.SQL("SELECT id, receipt, body, attempt FROM {}(%s, max => 10, visibility_timeout => interval '30 s')")
        .format(fn("receive")), (queue,)).fetchall()
    assert [bytes(r[2]) for r in rows] == [b"\x00\xff", b"resize 1.png"], rows
    assert all(r[3] == 1 for r in rows), rows
    binary, text = rows
    conn.execute(sql.SQL("SELECT {}(%s, %s::text)").format(fn("ack")), (queue, binary[1]))
    conn.execute(sql.SQL("SELECT {}(%s, %s::text, delay => interval '0 s', error => %s)").format(fn("nack")),
                 (queue, text[1], "thumbnailer busy"))
    again = conn.execute(sql.SQL("SELECT body, attempt, last_error, receipt FROM {}(%s)").format(fn("receive")),
                         (queue,)).fetchone()
    assert (bytes(again[0]), again[1], again[2]) == (b"resize 1.png", 2, "thumbnailer busy"), again
    conn.execute(sql.SQL("SELECT {}(%s, %s::text)").format(fn("ack")), (queue, again[3]))
    stats = conn.execute(sql.SQL("SELECT ready, in_flight FROM {}(%s)").format(fn("stats")), (queue,)).fetchone()
    assert stats == (0, 0), stats


def take_in_transactions():
    conn.execute(sql.SQL("SELECT {}(%s, %s)").format(fn("send")), (queue, "take me"))
    take = sql.SQL("SELECT id, body, attempt FROM {}(%s)").format(fn("take"))
    with conn.transaction(force_rollback=True):
        first = conn.execute(take, (queue,)).fetchone()
        assert (bytes(first[1]), first[2]) == (b"take me", 1), first
    with conn.transaction():
        again = conn.execute(take, (queue,)).fetchone()
        assert (again[0], bytes(again[1]), again[2]) == (first[0], b"take me", 1), again
    assert conn.execute(take, (queue,)).fetchone() is None
    stats = conn.execute(sql.SQL("SELECT ready, in_flight FROM {}(%s)").format(fn("stats")), (queue,)).fetchone()
    assert stats == (0, 0), stats


def refusals():
    cases = [
        (sql.SQL("SELECT {}(%s, 'x')").format(fn("send")), ("no-such-queue",), "PB200"),
        (sql.SQL("SELECT {}(%s, 'x')").format(fn("send")), ("bad name'; --",), "PB101"),
        (sql.SQL("SELECT {}(%s, 'x', priority => 10)").format(fn("send")), (queue,), "PB100"),
        (sql.SQL("SELECT {}(%s, %s::text)").format(fn("ack")), (queue, "1:00000000-0000-4000-8000-000000000000"),
         "PB300"),
    ]
    for query, args, code in cases:
        try:
            conn.execute(query, args)
        except psycopg.Error as e:
            assert e.sqlstate == code, (query.as_string(conn), e.sqlstate, str(e))
            assert str(e).startswith("pgbroker: "), str(e)
        else:
            raise AssertionError(f"{query.as_string(conn)} was not refused")


def outbox():
    produce = sql.SQL("SELECT partition, \"offset\" FROM {}(%s, key => %s, value => %s)").format(fn("produce"))
    with conn.transaction(force_rollback=True):
        conn.execute(produce, (topic, "user-1", "rolled back"))
    committed = [("user-1", "created by psycopg"), ("user-2", "paid by psycopg")]
    with conn.transaction():
        positions = [conn.execute(produce, (topic, k, v)).fetchone() for k, v in committed]
    assert len(positions) == 2 and all(o >= 0 for _, o in positions), positions
    with open(expected_path, "a") as f:
        for k, v in committed:
            f.write(f"{k} {v}\n")


check("queue send/receive/ack/nack", queue_round_trip)
check("take in a rolled-back and a committed transaction", take_in_transactions)
check("refusals carry their SQLSTATEs", refusals)
check("produce in a rolled-back and a committed transaction", outbox)
sys.exit(1 if failures else 0)
