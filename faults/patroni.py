"""A Patroni cluster for the fault scenarios: one etcd and two PostgreSQL
nodes, each run by its own `patroni` process (Debian's patroni and
etcd-server), in the harness's temp dir on free ports.

Patroni runs as the postgres user; etcd as whoever runs the suite. A
crashed primary is failed over rather than restarted in place
(`primary_start_timeout: 0`), and the old primary comes back as a replica
of the new one, through pg_rewind when its WAL went further."""

from __future__ import annotations

import json
import os
import platform
import pwd
import signal
import subprocess
import time
import urllib.error
import urllib.request

import yaml

from harness import PG_BIN, Failure, as_postgres, free_port, kill_group, wait_for

# Patroni's own defaults (what the measurements use), and a faster setting
# for the short form of the suite, where a run must stay under a minute.
TIMINGS = {
    "defaults": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
    "fast": {"ttl": 10, "loop_wait": 2, "retry_timeout": 3},
}


def _chown_to_postgres(path: str):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


class Etcd:
    """A single-node etcd on free ports; Patroni's DCS."""

    def __init__(self, root: str):
        self.dir = os.path.join(root, "etcd")
        self.port = free_port()
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.port}"
        out = open(os.path.join(root, "etcd.log"), "a")
        # etcd 3.4 refuses to start on architectures other than amd64 and
        # ppc64le (arm64 among them) unless this names the one it runs on.
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        self.proc = subprocess.Popen(
            ["etcd", "--name", "etcd0", "--data-dir", self.dir, "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"etcd0={peer}", "--initial-cluster-state", "new"],
            stdout=out, stderr=out, start_new_session=True, cwd=root,
            env=dict(os.environ, ETCD_UNSUPPORTED_ARCH=arch))
        out.close()
        wait_for("etcd healthy", self.healthy, 60, 0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def close(self):
        kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()


class PatroniNode:
    """One `patroni` process and the PostgreSQL server it runs."""

    def __init__(self, root: str, name: str, scope: str, etcd: Etcd, sync: bool, timing: str):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        _chown_to_postgres(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.rest_port = free_port()
        self.logfile = os.path.join(root, f"patroni-{name}.log")
        self.config = os.path.join(self.dir, "patroni.yml")
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"]
        parameters = {"max_connections": 200, "shared_buffers": "64MB", "wal_keep_size": "256MB",
                      "max_wal_senders": 10, "max_replication_slots": 10, "wal_log_hints": "on"}
        config = {
            "scope": scope,
            "namespace": "/pgbroker-faults/",
            "name": name,
            "restapi": {"listen": f"127.0.0.1:{self.rest_port}", "connect_address": f"127.0.0.1:{self.rest_port}"},
            "etcd3": {"host": f"127.0.0.1:{etcd.port}"},
            "watchdog": {"mode": "off"},
            "bootstrap": {
                "dcs": dict(TIMINGS[timing], synchronous_mode=sync, primary_start_timeout=0,
                            maximum_lag_on_failover=1048576,
                            postgresql={"use_pg_rewind": True, "use_slots": True, "parameters": parameters}),
                "initdb": [{"encoding": "UTF8"}, "no-sync"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": self.data,
                "bin_dir": PG_BIN,
                "pgpass": os.path.join(self.dir, "pgpass"),
                "pg_hba": hba,
                "parameters": {"unix_socket_directories": self.dir},
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "postgres", "password": "postgres"},
                },
            },
        }
        with open(self.config, "w") as f:
            yaml.safe_dump(config, f)
        _chown_to_postgres(self.config)
        self.proc = None

    def start(self):
        out = open(self.logfile, "a")
        self.proc = subprocess.Popen(["patroni", self.config], stdout=out, stderr=out, start_new_session=True,
                                     cwd=self.dir, **as_postgres())
        out.close()

    def rest(self, path: str) -> tuple[int | None, dict]:
        """Status and JSON body of a GET to Patroni's REST API (None when
        nothing answers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=2) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {}
        except (OSError, ValueError, urllib.error.URLError):
            return None, {}

    def is_primary(self) -> bool:
        """Patroni holds the leader lock here and its Postgres runs as primary."""
        status, body = self.rest("/primary")
        return status == 200 and body.get("role") in ("master", "primary") and body.get("state") == "running"

    def is_replica(self, sync: bool) -> bool:
        """Streaming from the leader (and its synchronous standby, when `sync`)."""
        status, body = self.rest("/sync" if sync else "/replica")
        return status == 200 and body.get("state") == "running"

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def kill_postmaster(self):
        """SIGKILL to the postmaster alone (its backends exit when they notice)."""
        pid = self.postmaster_pid()
        if pid is None:
            raise Failure(f"{self.name}: no live postmaster")
        os.kill(pid, signal.SIGKILL)

    def kill_patroni(self):
        """SIGKILL to Patroni (its Postgres keeps running)."""
        kill_group(self.proc)
        self.proc.wait()

    def sql(self, query: str) -> str:
        r = subprocess.run(
            [f"{PG_BIN}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-c", query],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return r.stdout

    def close(self):
        """Stops Patroni (which stops its Postgres), then whatever is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait()
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown, backends included
            try:
                wait_for("postmaster gone", lambda: not os.path.exists(f"/proc/{pid}"), 10, 0.1)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)


class PatroniCluster:
    """etcd and two Patroni nodes; `sync` turns on Patroni's
    synchronous_mode. Starts with node0 as the leader and node1 streaming
    from it (as its synchronous standby when `sync`)."""

    def __init__(self, root: str, sync: bool = True, timing: str = "defaults"):
        self.sync = sync
        self.timing = TIMINGS[timing]
        self.etcd = None
        self.nodes: list[PatroniNode] = []
        try:
            self.etcd = Etcd(root)
            scope = f"pgbroker-{os.getpid()}-{int(time.time() * 1000)}"
            self.nodes = [PatroniNode(root, f"node{i}", scope, self.etcd, sync, timing) for i in range(2)]
            self.nodes[0].start()
            self._wait(f"{self.nodes[0].name} the leader", self.nodes[0].is_primary, 120)
            self.nodes[1].start()
            self.wait_replica(self.nodes[1], 180)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """Both nodes; libpq-style clients find the primary by trying them."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgres://postgres@{hosts}/postgres?target_session_attrs=read-write"

    @staticmethod
    def _wait(what: str, predicate, timeout: float, interval: float = 0.2) -> float:
        try:
            return wait_for(what, predicate, timeout, interval)
        except TimeoutError as e:
            raise Failure(str(e)) from None

    def leader(self) -> PatroniNode:
        found = [n for n in self.nodes if n.is_primary()]
        if len(found) != 1:
            raise Failure(f"expected one Patroni leader, found {[n.name for n in found]}")
        return found[0]

    def wait_replica(self, node: PatroniNode, timeout: float) -> float:
        """Until `node` streams from the leader (as its synchronous standby in
        synchronous mode), by Patroni's word and the leader's
        pg_stat_replication, for 2 s in a row: a replica that started on a
        timeline the leader left is soon stopped again for pg_rewind."""
        leader = next(n for n in self.nodes if n is not node)
        state = "sync_state = 'sync'" if self.sync else "state = 'streaming'"
        since = [None]

        def ready():
            try:
                ok = node.is_replica(self.sync) and leader.sql(
                    f"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{node.name}'"
                    f" AND {state}").strip() == "1"
            except subprocess.SubprocessError:
                ok = False
            if not ok:
                since[0] = None
                return False
            since[0] = since[0] or time.monotonic()
            return time.monotonic() - since[0] >= 2

        return self._wait(f"{node.name} a {'synchronous ' if self.sync else ''}replica", ready, timeout, 0.5)

    def fail_over(self, rng, on_promoted=None, whole_node: bool = False) -> dict:
        """SIGKILL to the leader's postmaster (and, with `whole_node`, to its
        Patroni too, as when the machine dies), after a random part of
        loop_wait (the end of the previous fault was seen in step with
        Patroni's loop; a crash falls anywhere in it). Returns when the other
        node is the leader and the old one is back as its replica.
        `promoted_after_s` is the seconds from the kill until the new leader
        was seen, and `restored` (a wall clock time) the last poll before,
        which no commit on the new primary can precede. `on_promoted`, when
        given, is called once the new leader is seen, and what it returns (a
        dict) is added. A killed Patroni is started again once the new
        leader is seen."""
        time.sleep(rng.uniform(0, self.timing["loop_wait"]))
        old = self.leader()
        new = next(n for n in self.nodes if n is not old)
        behind = -1
        try:
            behind = int(float(old.sql("SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)), -1)"
                                       " FROM pg_stat_replication").strip() or -1))
        except subprocess.SubprocessError:
            pass
        start = time.time()
        if whole_node:
            old.kill_patroni()
        old.kill_postmaster()
        last_not = [start]

        def promoted():
            now = time.time()
            if new.is_primary():
                return True
            last_not[0] = now
            return False

        # The old primary's Patroni notices within loop_wait and releases the
        # leader lock, which the other takes at once; with no Patroni left
        # there, the lock expires after ttl.
        t = self.timing
        self._wait(f"{new.name} promoted", promoted, t["ttl"] + 3 * t["loop_wait"] + 30, 0.1)
        promoted_at = time.time()
        fault = {"at": start, "restored": last_not[0], "killed": old.name, "promoted_after_s": promoted_at - start,
                 "standby_behind_bytes": behind}
        if on_promoted is not None:
            fault.update(on_promoted())
        if whole_node:
            old.start()
        self.wait_replica(old, 240)
        fault["rejoined_after_s"] = time.time() - start
        return fault

    def close(self):
        for n in self.nodes:
            try:
                n.close()
            except Exception:  # stop the rest regardless
                pass
        if self.etcd is not None:
            self.etcd.close()


def patroni_cluster(h, args, sync: bool) -> PatroniCluster:
    """A Patroni cluster in the run's directory, stopped with it."""
    cluster = PatroniCluster(h.dir, sync, args.patroni_timing)
    h.closers.append(cluster.close)
    return cluster
