"""Pieces every fault scenario uses: a throwaway PostgreSQL cluster, pgbroker
processes (on it, or each with its own embedded cluster), a TCP proxy that can cut or stall the broker's link to Postgres,
and health checks. Everything started here is stopped by `Harness.close`."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PYTHON = "/usr/bin/python3"  # Debian's, which python3-confluent-kafka installs into
HERE = os.path.dirname(os.path.abspath(__file__))
# PyPI's confluent-kafka (a recent librdkafka), made by scripts/setup.sh.
VENV_PYTHON = os.path.join(os.path.dirname(HERE), "compat", ".venv", "bin", "python")


class Failure(Exception):
    """A check failed (the run goes on with the next scenario)."""


def check(cond, message):
    if not cond:
        raise Failure(message)


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# Listening ports come from below the kernel's ephemeral range (32768 and up
# on Linux). A process here is restarted on its old port while clients keep
# reconnecting to it; a port from the ephemeral range can meanwhile become
# the source port of one of their outgoing connections (or of a TCP
# self-connect), and the restarted process then cannot bind it. The range is
# apart from the Rust tests' (20000-32000); each run starts at a place of
# its own and hands out no port twice.
PORTS = range(10000, 20000)
_next_port = [PORTS.start + os.getpid() * 7 % len(PORTS)]
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(len(PORTS)):
        port = _next_port[0]
        _next_port[0] = PORTS.start + (port + 1 - PORTS.start) % len(PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def wait_for(what: str, predicate, timeout: float, interval: float = 0.1):
    """Polls until predicate() is truthy; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def as_postgres() -> dict:
    """Popen arguments that run a command as the postgres OS user when we
    are root (Postgres refuses root). The server stays our own child, so
    that we reap it and its pid cannot linger as a zombie."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


class Postgres:
    """A cluster of its own in a temp dir, on a free port: a new one, or a
    streaming standby of `primary` (see `make_standby_of`)."""

    def __init__(self, root: str, name: str = "pg", primary: "Postgres | None" = None):
        self.name = name
        self.dir = os.path.join(root, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.proc = None
        self.logfile = os.path.join(root, "postgres.log" if name == "pg" else f"{name}.log")
        if primary is not None:
            self.make_standby_of(primary)
            return
        subprocess.run(
            [f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-N"],
            check=True,
            cwd=self.dir,
            **as_postgres(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.start()

    def make_standby_of(self, primary: "Postgres"):
        """Replaces this cluster's data with a base backup of `primary` and
        starts it as its streaming standby, on this cluster's port, named
        by `application_name` for synchronous replication."""
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={self.name}"
        subprocess.run(
            [f"{PG_BIN}/pg_basebackup", "-D", self.data, "-d", conninfo, "-X", "stream", "-R", "-c", "fast"],
            check=True, cwd=self.dir, **as_postgres(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.start()

    def is_primary(self) -> bool:
        return self.sql("SELECT NOT pg_is_in_recovery()").strip() == "t"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        out = open(self.logfile, "a")
        cmd = [f"{PG_BIN}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.dir]
        cmd += ["-c", "wal_level=replica", "-c", "max_wal_senders=10", "-c", "wal_keep_size=256MB"]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True, cwd=self.dir, **as_postgres())
        out.close()
        wait_for("postgres up", self.ready, 60, 0.2)

    def ready(self) -> bool:
        r = subprocess.run(
            [f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"], stdout=subprocess.DEVNULL
        )
        return r.returncode == 0

    def kill(self):
        """SIGKILL to the postmaster and every backend at once."""
        kill_group(self.proc)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            kill_group(self.proc, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def sql(self, query: str) -> str:
        r = subprocess.run(
            [f"{PG_BIN}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-c", query],
            check=True, capture_output=True, text=True,
        )
        return r.stdout


class Proxy:
    """TCP proxy between pgbroker and Postgres, run on its own event loop in a
    thread. `cut()` drops every connection and refuses new ones; `stall()`
    stops forwarding (connections stay open); `restore()` ends either."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.mode = "forward"
        self.attempts = []  # monotonic times of incoming connections
        self.loop = asyncio.new_event_loop()
        self.flowing = None
        self.writers = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.flowing = asyncio.Event()
        self.flowing.set()
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _handle(self, cr, cw):
        self.attempts.append(time.monotonic())
        if self.mode == "cut":
            cw.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.transport.abort()
            return
        self.writers.update((cw, uw))
        await asyncio.gather(self._pump(cr, uw), self._pump(ur, cw), return_exceptions=True)
        for w in (cw, uw):
            self.writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def _call(self, fn):
        done = threading.Event()

        def run():
            fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)

    def cut(self):
        def go():
            self.mode = "cut"
            for w in list(self.writers):
                w.transport.abort()
            self.flowing.set()

        self._call(go)

    def stall(self):
        def go():
            self.mode = "stall"
            self.flowing.clear()

        self._call(go)

    def restore(self):
        def go():
            self.mode = "forward"
            self.flowing.set()

        self._call(go)

    def attempts_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.attempts if start <= t <= end)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Broker:
    """One `pgbroker serve` process, restartable on the same ports."""

    def __init__(self, harness: "Harness", database_url: str, name: str = "broker"):
        self.h = harness
        self.url = database_url
        self.name = name
        self.kafka_port = free_port()
        self.http_port = free_port()
        self.proc = None
        self.logfile = os.path.join(harness.dir, f"{name}.log")
        self.starts = 0
        # More `serve` flags.
        self.extra: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def serve_args(self) -> list[str]:
        return ["--database-url", self.url, "serve"] + self.extra

    def reads_by_server(self) -> dict[str, float]:
        """pgbroker_fetch_reads_total of /metrics, by server label."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r'pgbroker_fetch_reads_total\{server="([^"]*)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def start(self, wait=True):
        self.starts += 1
        out = open(self.logfile, "a")
        cmd = [self.h.bin] + self.serve_args()
        cmd += ["--kafka-listen", self.bootstrap, "--http-listen", f"127.0.0.1:{self.http_port}"]
        env = dict(os.environ, PGBROKER_LOG="info")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
        out.close()
        if wait:
            wait_for(f"{self.name} healthy", lambda: self.health() == 200, 60)

    def health(self):
        """The status of /healthz, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return None

    def kill(self, sig=signal.SIGKILL, timeout=60):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} had exited with {self.proc.returncode}; see {self.logfile}")
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.wait()


class EmbeddedBroker(Broker):
    """`pgbroker serve --embedded DIR`: the broker runs its own cluster,
    which a killed broker leaves running until the next start (or `close`)
    stops it."""

    def __init__(self, harness: "Harness", name: str = "broker"):
        self.cluster = os.path.join(harness.dir, "embedded")
        super().__init__(harness, "", name)

    def serve_args(self) -> list[str]:
        return ["serve", "--embedded", self.cluster]

    def postmaster(self) -> tuple[int, int] | None:
        """(pid, port) of the cluster's live postmaster, from postmaster.pid."""
        try:
            with open(os.path.join(self.cluster, "data", "postmaster.pid")) as f:
                lines = f.read().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        return (pid, port) if os.path.exists(f"/proc/{pid}") else None

    def postmaster_ready(self) -> bool:
        try:
            with open(os.path.join(self.cluster, "data", "postmaster.pid")) as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        return len(lines) > 7 and lines[7].strip() == "ready"

    def database_url(self) -> str:
        pm = self.postmaster()
        if pm is None:
            raise RuntimeError(f"no embedded postmaster in {self.cluster}")
        return f"host={self.cluster} port={pm[1]} user=postgres dbname=postgres"

    def close(self):
        super().close()
        pm = self.postmaster()
        if pm is not None:
            os.kill(pm[0], signal.SIGINT)  # fast shutdown
            try:
                wait_for("embedded postmaster stopped", lambda: not os.path.exists(f"/proc/{pm[0]}"), 30, 0.1)
            except TimeoutError:
                os.kill(pm[0], signal.SIGKILL)


class Harness:
    def __init__(self, binary: str, keep: bool = False):
        self.bin = os.path.abspath(binary)
        self.dir = tempfile.mkdtemp(prefix="pgbroker-faults-")
        os.chmod(self.dir, 0o755)
        self.keep = keep
        self.procs: list[subprocess.Popen] = []
        self.closers = []

    def history(self, name: str) -> str:
        return os.path.join(self.dir, "history", name)

    def postgres(self, name: str = "pg", primary: Postgres | None = None) -> Postgres:
        pg = Postgres(self.dir, name, primary)
        self.closers.append(pg.stop)
        return pg

    def proxy(self, target_port: int) -> Proxy:
        p = Proxy(target_port)
        self.closers.append(p.close)
        return p

    def broker(self, url: str, name="broker") -> Broker:
        b = Broker(self, url, name)
        self.closers.append(b.close)
        return b

    def embedded_broker(self, name="broker") -> EmbeddedBroker:
        b = EmbeddedBroker(self, name)
        self.closers.append(b.close)
        return b

    def cli(self, url: str, args: list[str], stdin: str = "", timeout=60) -> str:
        r = subprocess.run([self.bin, "--database-url", url] + args, input=stdin, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"pgbroker {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def client(self, role: str, args: list[str], name: str, script: str = "clients.py",
               python: str = PYTHON) -> subprocess.Popen:
        """A client process from `script` (clients.py), in its own process group."""
        out = open(os.path.join(self.dir, f"{name}.log"), "a")
        p = subprocess.Popen([python, os.path.join(HERE, script), role] + args, stdout=out, stderr=out,
                             start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def print_log_tails(self, lines: int = 40):
        """The end of every non-empty process log, so that a failure in CI,
        where the kept directory is gone, still says what went wrong."""
        for path in sorted(glob.glob(os.path.join(self.dir, "*.log"))):
            try:
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-lines:]
            except OSError as e:
                log(f"--- {os.path.basename(path)}: {e}")
                continue
            if tail:
                log(f"--- last {len(tail)} lines of {os.path.basename(path)}")
                sys.stderr.write("".join(tail))
        sys.stderr.flush()

    def close(self, failed: bool):
        for p in self.procs:
            kill_group(p)
            p.wait()
        for c in reversed(self.closers):
            try:
                c()
            except Exception as e:  # clean up the rest regardless
                log("cleanup:", e)
        if failed:
            self.print_log_tails()
        if failed or self.keep:
            log("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def read_jsonl(path: str) -> list[dict]:
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def require_sync_standby(primary: Postgres):
    """Commits on `primary` wait for a standby's flush from now on."""
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.sql("SELECT pg_reload_conf()")
    try:
        wait_for("a synchronous standby", lambda: primary.sql(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").strip() == "1", 60, 0.2)
    except TimeoutError as e:
        raise Failure(str(e)) from None
