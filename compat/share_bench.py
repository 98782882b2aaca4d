#!/usr/bin/env python3
"""Share groups as a work queue, measured: how fast four consumers drain
and acknowledge the same backlog through a pgbroker share group
(confluent-kafka's ShareConsumer over the Kafka protocol), through a
pgbroker work queue (the SQL functions `receive` and `ack`, psycopg), and
through RabbitMQ (py-amqp, manual acknowledgements, prefetch 500).

    share_bench.py BOOTSTRAP DATABASE_URL SCHEMA [--records 100000] [--size 1024] [--rounds 3]
                   [--out results/share-drain-<time>.json] [--markdown docs/bench/share-drain.md]

Per round and system: the backlog is loaded first, then four consumer
processes start together and each acknowledges what it gets; the rate is
records acknowledged over the time from the first record received to the
last acknowledgement. Each client runs in the virtual environment that has
it (compat/.venv, compat/sql/.venv, compat/.venv-celery, made by
scripts/setup.sh). RabbitMQ is the machine's, at 127.0.0.1:5672.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = {
    "share group": os.path.join(HERE, ".venv/bin/python"),
    "pgbroker queue (SQL)": os.path.join(HERE, "sql/.venv/bin/python"),
    "RabbitMQ": os.path.join(HERE, ".venv-celery/bin/python"),
}
CONSUMERS = 4
BATCH = 500


# --- children: one consumer each, printing "first last count" when done ---

def child_share(bootstrap, topic, total):
    import confluent_kafka as ck
    c = ck.ShareConsumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-g",
                          "share.acknowledgement.mode": "implicit"})
    c.subscribe([topic])
    return drain(lambda: [m for m in c.poll(0.5) if not m.error()], lambda got: None, c.close, total)


def child_queue(url, schema, queue, total):
    import psycopg
    conn = psycopg.connect(url, autocommit=True)
    cur = conn.cursor()

    def take():
        cur.execute(f'SELECT receipt FROM "{schema}".receive(%s, %s)', (queue, BATCH))
        return [r[0] for r in cur.fetchall()]

    def ack(receipts):
        cur.execute(f'SELECT "{schema}".ack(%s, %s::text[])', (queue, receipts))
    return drain(take, ack, conn.close, total)


def child_rabbit(queue, total):
    import amqp
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    ch = conn.channel()
    ch.basic_qos(0, BATCH, False)
    got = []
    ch.basic_consume(queue, callback=got.append, no_ack=False)

    def take():
        try:
            conn.drain_events(timeout=0.5)
            while True:
                conn.drain_events(timeout=0)
        except Exception:
            pass
        taken, got[:] = list(got), []
        return taken

    def ack(msgs):
        ch.basic_ack(msgs[-1].delivery_tag, multiple=True)
    return drain(take, ack, conn.close, total)


def drain(take, ack, close, total):
    """Takes and acknowledges until the whole backlog is gone (seen by the
    counter file of all consumers) or nothing came for 5 s."""
    first, last, count, idle = None, None, 0, time.monotonic()
    while time.monotonic() - idle < 5:
        got = take()
        if not got:
            continue
        first = first or time.time()
        ack(got)
        count += len(got)
        last, idle = time.time(), time.monotonic()
    close()
    print(json.dumps({"first": first, "last": last, "count": count}), flush=True)


# --- loading ---

def load_share(args, topic, body):
    import confluent_kafka as ck
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                       ResourceType)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(20)
    e = [ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)]
    for f in admin.incremental_alter_configs([ConfigResource(ResourceType.GROUP, f"{topic}-g",
                                                             incremental_configs=e)]).values():
        f.result(20)
    p = ck.Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
    for i in range(args.records):
        p.produce(topic, value=body, partition=i % 2)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def run_py(system, code):
    out = subprocess.run([PY[system], "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def one_round(args, n):
    rows = []
    body = b"x" * args.size
    for system in PY:
        name = f"{args.schema}_sb{n}_{list(PY).index(system)}"
        if system == "share group":
            run_py(system, f"import sys; sys.path.insert(0, {HERE!r}); import share_bench as b, argparse; "
                           f"b.load_share(argparse.Namespace(bootstrap={args.bootstrap!r}, records={args.records}),"
                           f" {name!r}, {body!r})")
            cmd = ["share", args.bootstrap, name]
        elif system == "pgbroker queue (SQL)":
            create_queue(args, name, body)
            cmd = ["queue", args.database_url, args.schema, name]
        else:
            run_py(system, f"import amqp; c = amqp.Connection('127.0.0.1:5672', userid='guest', password='guest');"
                           f" c.connect(); ch = c.channel(); ch.queue_declare({name!r}, durable=True, "
                           f"auto_delete=False); m = amqp.Message({body!r}, delivery_mode=2)\n"
                           f"for _ in range({args.records}): ch.basic_publish(m, routing_key={name!r})\n"
                           f"c.close()")
            cmd = ["rabbit", name]
        procs = [subprocess.Popen([PY[system], __file__, "--child", *cmd, str(args.records)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(CONSUMERS)]
        results = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]
        done = [r for r in results if r["count"]]
        count = sum(r["count"] for r in results)
        span = max(r["last"] for r in done) - min(r["first"] for r in done)
        rows.append({"system": system, "round": n, "records": args.records, "size": args.size,
                     "acknowledged": count, "per_consumer": sorted(r["count"] for r in results),
                     "records_per_s": round(count / span)})
        print(json.dumps(rows[-1]), flush=True)
        assert count == args.records, f"{system}: {count} of {args.records} acknowledged"
    return rows


def create_queue(args, name, body):
    """The queue through the pgbroker CLI (the library's rules), then the
    backlog through `send_batch`."""
    bin_ = os.environ.get("PGBROKER_BIN", os.path.join(HERE, "..", "target", "release", "pgbroker"))
    subprocess.run([bin_, "--database-url", args.database_url, "--schema", args.schema, "queue", "create", name],
                   check=True, capture_output=True)
    run_py("pgbroker queue (SQL)",
           f"import psycopg; c = psycopg.connect({args.database_url!r}, autocommit=True)\n"
           f"for _ in range({args.records} // 1000): c.execute('SELECT count(*) FROM \"{args.schema}\".send_batch("
           f"%s, %s::bytea[])', ({name!r}, [{body!r}] * 1000))")


def markdown(rows, args):
    out = ["# Share groups as a work queue: four consumers drain a backlog", "",
           f"{args.records:,} records of {args.size} bytes loaded first, then drained and acknowledged by "
           f"{CONSUMERS} consumer processes; {args.rounds} rounds, median records/s (lowest and highest in "
           "brackets). Generated by `compat/share_bench.py`.", "",
           "| system | client | records/s acknowledged |", "|---|---|---|"]
    clients = {"share group": "confluent-kafka ShareConsumer (librdkafka 2.16), implicit acknowledgement",
               "pgbroker queue (SQL)": f"psycopg, `receive` of {BATCH} and `ack` of the array",
               "RabbitMQ": f"py-amqp, prefetch {BATCH}, one multiple ack per batch"}
    for system in PY:
        rates = [r["records_per_s"] for r in rows if r["system"] == system]
        if rates:
            out.append(f"| {system} | {clients[system]} | {statistics.median(rates):,.0f} "
                       f"({min(rates):,} to {max(rates):,}) |")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        {"share": lambda: child_share(rest[0], rest[1], int(rest[2])),
         "queue": lambda: child_queue(rest[0], rest[1], rest[2], int(rest[3])),
         "rabbit": lambda: child_rabbit(rest[0], int(rest[1]))}[kind]()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("database_url")
    ap.add_argument("schema")
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    rows = [r for n in range(args.rounds) for r in one_round(args, n)]
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
