"""Dramatiq, through dramatiq-sqs's SQSBroker, against pgbroker's
SQS-compatible API. Starts its own Dramatiq worker and checks, from an
execution log the actors append to (dramatiq_actors.py) and from the
queues themselves:

1. N messages to two actors, sent without faults, each run exactly once,
   and the queue is empty afterwards (every message deleted);
2. an actor that fails on its first run is retried by Dramatiq's Retries
   middleware (dramatiq-sqs sends the retry as a new message with a delay)
   and runs exactly twice;
3. an actor that always fails runs 1 + max_retries times, then its message
   is dead-lettered: dramatiq-sqs sends the body to the queue's `_dlq`
   queue and deletes it from the queue (it sets no RedrivePolicy);
4. the worker stops cleanly on SIGTERM, giving back what it prefetched.

    SQS_ACCESS_KEY_ID=... SQS_SECRET_ACCESS_KEY=... dramatiq_scenario.py ENDPOINT WORKDIR

Prints one PASS/FAIL line per check and MEASURE lines (reported, never
asserted). Exits 1 if any check failed.
"""

import base64
import collections
import os
import signal
import subprocess
import sys
import time

import boto3
import dramatiq

HERE = os.path.dirname(os.path.abspath(__file__))
ENDPOINT, WORKDIR = sys.argv[1], sys.argv[2]
os.environ["DRAMATIQ_COMPAT_ENDPOINT"] = ENDPOINT
os.environ["DRAMATIQ_COMPAT_DIR"] = WORKDIR
sys.path.insert(0, HERE)

import dramatiq_actors as actors  # noqa: E402

FAILED = []
QUEUE = f"{actors.NAMESPACE}_default"
SQS = boto3.client(
    "sqs",
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    aws_access_key_id=os.environ["SQS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["SQS_SECRET_ACCESS_KEY"],
)


def check(what, ok, detail=""):
    line = f"{'PASS' if ok else 'FAIL'} {what}"
    if not ok and detail:
        line += f" ({detail})"
    print(line, flush=True)
    if not ok:
        FAILED.append(line)


def runs(actor):
    """How often each argument ran, for one actor."""
    c = collections.Counter()
    for line in actors._lines():
        parts = line.split()
        if parts and parts[0] == actor:
            c[int(parts[1])] += 1
    return c


def wait_for(cond, limit):
    """Polls cond until it holds; False (and the run fails) after limit seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def counts(name):
    url = SQS.get_queue_url(QueueName=name)["QueueUrl"]
    a = SQS.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return tuple(int(a[f"ApproximateNumberOfMessages{k}"]) for k in ("", "NotVisible", "Delayed"))


# 1. N messages to two actors, each run exactly once.
N = 200
t0 = time.monotonic()
for i in range(N // 2):
    actors.square.send(i)
    actors.greet.send(i)
print(f"MEASURE sent {N} messages in {time.monotonic() - t0:.1f} s", flush=True)
check("queues made by dramatiq-sqs (the queue and its _dlq, with MessageRetentionPeriod)",
      SQS.get_queue_attributes(QueueUrl=SQS.get_queue_url(QueueName=QUEUE)["QueueUrl"],
                               AttributeNames=["MessageRetentionPeriod"])["Attributes"]
      == {"MessageRetentionPeriod": str(14 * 86400)} and counts(QUEUE + "_dlq") == (0, 0, 0))

log = open(os.path.join(WORKDIR, "worker.log"), "w")
worker = subprocess.Popen(
    [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "dramatiq_actors",
     "--processes", "1", "--threads", "4"],
    cwd=HERE, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
)
t1 = time.monotonic()
every = lambda: len(runs("square")) == N // 2 and len(runs("greet")) == N // 2  # noqa: E731
done = wait_for(every, 60)
print(f"MEASURE {len(runs('square')) + len(runs('greet'))} of {N} messages ran "
      f"{time.monotonic() - t1:.1f} s after the worker started", flush=True)
check(f"{N} messages: all ran", done)
empty = wait_for(lambda: counts(QUEUE) == (0, 0, 0), 30)
check(f"{N} messages: queue empty afterwards (every message deleted)", empty, f"counts {counts(QUEUE)}")
twice = {(a, n): c for a in ("square", "greet") for n, c in runs(a).items() if c != 1}
check(f"{N} messages: each ran exactly once", done and not twice, f"{len(twice)} ran more than once")

# 2. Retried after a failure: runs exactly twice.
for i in range(3):
    actors.flaky.send(i)
retried = wait_for(lambda: runs("flaky") == {0: 2, 1: 2, 2: 2}, 30)
check("retry: a message that failed once ran again, exactly twice", retried, f"runs {dict(runs('flaky'))}")

# 3. Always failing: 1 + max_retries runs, then dead-lettered.
for i in range(2):
    actors.poison.send(i)
gave_up = wait_for(lambda: runs("poison") == {0: 3, 1: 3}, 30)
check("dead letter: a failing message ran 1 + max_retries (2) times", gave_up, f"runs {dict(runs('poison'))}")
dlq_url = SQS.get_queue_url(QueueName=QUEUE + "_dlq")["QueueUrl"]
dead = []
deadline = time.monotonic() + 20
while len(dead) < 2 and time.monotonic() < deadline:
    got = SQS.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    for m in got:
        dead.append(dramatiq.Message.decode(base64.b64decode(m["Body"])))
        SQS.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
found = sorted((m.actor_name, tuple(m.args)) for m in dead)
check("dead letter: the dead-letter queue holds exactly the failed messages",
      found == [("poison", (0,)), ("poison", (1,))], f"found {found}")
settled = wait_for(lambda: counts(QUEUE) == (0, 0, 0) and counts(QUEUE + "_dlq") == (0, 0, 0), 30)
check("nothing left in either queue", settled, f"queue {counts(QUEUE)}, dlq {counts(QUEUE + '_dlq')}")

# 4. Clean shutdown.
worker.send_signal(signal.SIGTERM)
try:
    worker.wait(timeout=30)
except subprocess.TimeoutExpired:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
check("worker: clean shutdown on SIGTERM", worker.returncode == 0, f"exit {worker.returncode}")
print(f"MEASURE whole scenario {time.monotonic() - t0:.1f} s", flush=True)
print(f"{'FAILED' if FAILED else 'OK'}: {len(FAILED)} failed checks", flush=True)
sys.exit(1 if FAILED else 0)
