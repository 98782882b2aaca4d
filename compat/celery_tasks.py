"""The Celery application of the Celery scenario (celery_scenario.py): its
broker is kombu's SQS transport pointed at pgbroker, its results go to a
directory (Celery's filesystem result backend), and every task appends one
line per execution to an execution log, so that the scenario can count how
often each task id ran.

Environment (set by celery_scenario.py for itself and for its workers):
    CELERY_COMPAT_BROKER   sqs://KEY:SECRET@HOST:PORT/
    CELERY_COMPAT_DIR      directory for results and the execution log
    CELERY_COMPAT_QUEUE    the queue a worker consumes and tasks go to
    CELERY_COMPAT_ACKS_LATE  "1" for task_acks_late=True
"""

import os
import time

from celery import Celery

DIR = os.environ["CELERY_COMPAT_DIR"]
LOG = os.path.join(DIR, "executions.log")
RESULTS = os.path.join(DIR, "results")
os.makedirs(RESULTS, exist_ok=True)

app = Celery("celery_tasks")
app.conf.update(
    broker_url=os.environ["CELERY_COMPAT_BROKER"],
    broker_transport_options={
        "region": "us-east-1",
        "is_secure": False,
        "wait_time_seconds": 1,
        "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    result_backend="file://" + RESULTS,
    task_default_queue=os.environ.get("CELERY_COMPAT_QUEUE", "celery-compat"),
    task_acks_late=os.environ.get("CELERY_COMPAT_ACKS_LATE") == "1",
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
)


def record(event, task_id, n):
    """One line per event; an O_APPEND write of a short line is atomic, so
    the worker processes never interleave their lines."""
    line = f"{event} {task_id} {n} {os.getpid()}\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task(bind=True)
def double(self, n):
    record("run", self.request.id, n)
    return n * 2


@app.task(bind=True, max_retries=3)
def flaky(self, n):
    record("run", self.request.id, n)
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return n + 1


@app.task(bind=True)
def slow(self, n, seconds):
    record("start", self.request.id, n)
    time.sleep(seconds)
    record("done", self.request.id, n)
    return n
