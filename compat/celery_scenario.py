"""Celery, through kombu's SQS transport, against pgbroker's SQS-compatible
API. Starts its own Celery workers and checks, from an execution log the
tasks append to (celery_tasks.py) and from Celery's recorded results:

1. 1,000 tasks sent without faults each run exactly once, each result is
   recorded, and the queue is empty afterwards (every message deleted);
2. a task that calls `self.retry` runs again and its second result is
   recorded;
3. with `task_acks_late=True` and a 6 s visibility timeout, a worker
   SIGKILLed (with its pool processes) while tasks run loses none: the tasks
   it was running run again in a second worker, and every task completes.

    SQS_ACCESS_KEY_ID=... SQS_SECRET_ACCESS_KEY=... celery_scenario.py ENDPOINT WORKDIR

Prints one PASS/FAIL line per check and MEASURE lines (reported, never
asserted). Exits 1 if any check failed.
"""

import collections
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import boto3

FAILED = []
HERE = os.path.dirname(os.path.abspath(__file__))
ENDPOINT, WORKDIR = sys.argv[1], sys.argv[2]
KEY, SECRET = os.environ["SQS_ACCESS_KEY_ID"], os.environ["SQS_SECRET_ACCESS_KEY"]
HOSTPORT = urllib.parse.urlsplit(ENDPOINT).netloc
USERINFO = f"{urllib.parse.quote(KEY, safe='')}:{urllib.parse.quote(SECRET, safe='')}"
os.environ["CELERY_COMPAT_BROKER"] = f"sqs://{USERINFO}@{HOSTPORT}/"
os.environ["CELERY_COMPAT_DIR"] = WORKDIR
os.environ["CELERY_COMPAT_QUEUE"] = "celery-compat"
sys.path.insert(0, HERE)

import celery_tasks  # noqa: E402

SQS = boto3.client(
    "sqs",
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    aws_access_key_id=KEY,
    aws_secret_access_key=SECRET,
)


def check(what, ok, detail=""):
    line = f"{'PASS' if ok else 'FAIL'} {what}"
    if not ok and detail:
        line += f" ({detail})"
    print(line, flush=True)
    if not ok:
        FAILED.append(line)


def events():
    """(event, task id, n) per line of the execution log."""
    try:
        with open(celery_tasks.LOG) as f:
            return [tuple(line.split()[:3]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_for(cond, limit):
    """Polls cond until it holds; False (and the run fails) after limit seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def start_worker(name, queue, concurrency, acks_late):
    env = dict(os.environ, CELERY_COMPAT_QUEUE=queue, CELERY_COMPAT_ACKS_LATE="1" if acks_late else "0")
    log = open(os.path.join(WORKDIR, f"worker-{name}.log"), "w")
    celery_bin = os.path.join(os.path.dirname(sys.executable), "celery")
    return subprocess.Popen(
        [celery_bin, "-A", "celery_tasks", "worker", "-Q", queue, "-c", str(concurrency),
         "-P", "prefork", "-n", f"{name}@compat", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "INFO"],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_worker(proc):
    """Warm shutdown; the whole process group is killed if that hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def queue_counts(name):
    url = SQS.get_queue_url(QueueName=name)["QueueUrl"]
    a = SQS.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def result_of(task, task_id):
    try:
        return task.AsyncResult(task_id).get(timeout=30, interval=0.1)
    except Exception as e:  # noqa: BLE001 - reported as the failure detail
        return f"{type(e).__name__}: {e}"


# Queues made before kombu sees them, so each has its own visibility timeout:
# long for the queue without faults, 6 s for the one whose worker is killed.
SQS.create_queue(QueueName="celery-compat", Attributes={"VisibilityTimeout": "600"})
SQS.create_queue(QueueName="celery-acks-late", Attributes={"VisibilityTimeout": "6"})

# 1. 1,000 tasks, each exactly once.
N = 1000
worker = start_worker("plain", "celery-compat", 4, acks_late=False)
t0 = time.monotonic()
sent = {celery_tasks.double.delay(i).id: i for i in range(N)}
print(f"MEASURE sent {N} tasks in {time.monotonic() - t0:.1f} s", flush=True)
ran = lambda: {t for e, t, _ in events() if e == "run"}  # noqa: E731
done = wait_for(lambda: set(sent) <= ran(), 150)
print(f"MEASURE {len(set(sent) & ran())} of {N} tasks ran {time.monotonic() - t0:.1f} s after the first send", flush=True)
check(f"{N} tasks: all ran", done, f"{N - len(set(sent) & ran())} never ran")
# Every message deleted once its task ran: none can come back later.
empty = wait_for(lambda: queue_counts("celery-compat") == (0, 0), 30)
check("1000 tasks: queue empty afterwards (every message deleted)", empty, f"visible, in flight = {queue_counts('celery-compat')}")
runs = collections.Counter(t for e, t, _ in events() if e == "run" and t in sent)
wrong = {t: c for t, c in runs.items() if c != 1}
check(f"{N} tasks: each ran exactly once", done and not wrong and len(runs) == N,
      f"{len(wrong)} ran more than once, e.g. {list(wrong.items())[:3]}")
bad = {t: r for t, n in sent.items() if (r := result_of(celery_tasks.double, t)) != 2 * n}
check(f"{N} tasks: each result recorded", not bad, f"{len(bad)} wrong, e.g. {list(bad.items())[:3]}")

# 2. self.retry runs the task again.
flaky = [celery_tasks.flaky.delay(100 + i) for i in range(3)]
flaky_ids = {r.id for r in flaky}
flaky_runs = lambda: collections.Counter(t for e, t, _ in events() if e == "run" and t in flaky_ids)  # noqa: E731
again = wait_for(lambda: len(flaky_runs()) == 3 and min(flaky_runs().values()) >= 2, 60)
check("retry: the retried task ran again", again, f"runs per task: {dict(flaky_runs())}")
results = [result_of(celery_tasks.flaky, r.id) for r in flaky]
check("retry: the result of the second run is recorded", results == [101, 102, 103], f"{results}")
stop_worker(worker)
check("worker: warm shutdown", worker.returncode == 0, f"exit {worker.returncode}")

# 3. acks_late: a worker SIGKILLed mid-task loses no task.
M, SECONDS = 12, 2
slow = {celery_tasks.slow.apply_async((i, SECONDS), queue="celery-acks-late").id: i for i in range(M)}
marks = lambda ev: collections.Counter(t for e, t, _ in events() if e == ev and t in slow)  # noqa: E731
worker = start_worker("doomed", "celery-acks-late", 2, acks_late=True)
started = wait_for(lambda: bool(set(marks("start")) - set(marks("done"))), 60)
os.killpg(worker.pid, signal.SIGKILL)
worker.wait()
in_flight = set(marks("start")) - set(marks("done"))
killed_at = time.monotonic()
check("acks_late: the worker was killed while a task ran", started and bool(in_flight), "no task was running")
worker = start_worker("survivor", "celery-acks-late", 2, acks_late=True)
complete = wait_for(lambda: set(marks("done")) >= set(slow), 120)
print(f"MEASURE all {M} tasks done {time.monotonic() - killed_at:.1f} s after the kill", flush=True)
check("acks_late: every task completed after the worker was killed", complete,
      f"{len(set(slow) - set(marks('done')))} never completed")
starts = marks("start")
check("acks_late: the tasks killed mid-run ran again", all(starts[t] >= 2 for t in in_flight),
      f"starts of the killed tasks: {[starts[t] for t in in_flight]}")
bad = {t: r for t, n in slow.items() if (r := result_of(celery_tasks.slow, t)) != n}
check("acks_late: every result recorded", not bad, f"{len(bad)} wrong, e.g. {list(bad.items())[:3]}")
stop_worker(worker)

print(f"{'FAILED' if FAILED else 'OK'}: {len(FAILED)} failed checks", flush=True)
sys.exit(1 if FAILED else 0)
