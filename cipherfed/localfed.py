"""A whole federation on this machine: key holder, coordinator and site daemons as separate
processes on loopback, each with its own startup kit, state folder and log file.

Used by ``cipherfed demo`` and by the reliability tests. Ports are chosen free on
127.0.0.1; every child gets ``PR_SET_PDEATHSIG`` so it dies with this process, and
:meth:`LocalFederation.stop` terminates (then kills) whatever is still running.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from cipherfed.config import FederationConfig, dumps_config, load_config
from cipherfed.provisioning import ProvisionResult, provision

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServiceProcess:
    """One ``python -m cipherfed.cli ...`` child with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.args = [sys.executable, "-m", "cipherfed.cli", *args]
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        logger.debug("started %s (pid %d)", name, self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class LocalFederation:
    """Provision ``cfg`` into ``root`` and run its processes.

    ``root/kits`` (startup kits), ``root/state/<role>`` (state folders),
    ``root/logs/<role>.log``.
    """

    def __init__(
        self,
        root: Path,
        cfg: FederationConfig,
        *,
        log_level: str = "INFO",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        fed_file = self.root / "federation.toml"
        fed_file.write_text(dumps_config(cfg))
        self.cfg = load_config(fed_file)
        self.kits: ProvisionResult = provision(self.cfg, self.root / "kits")
        self.log_level = log_level
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            **(extra_env or {}),
        }
        self.procs: dict[str, ServiceProcess] = {}

    # -- paths -----------------------------------------------------------------------
    def state(self, name: str) -> Path:
        return self.root / "state" / name

    @property
    def coordinator_db(self) -> Path:
        return self.state("coordinator") / "coordinator.sqlite"

    def _start(self, name: str, args: Sequence[str]) -> ServiceProcess:
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is already running (pid {old.pid})")
        proc = ServiceProcess(
            name,
            ["--log-level", self.log_level, *args],
            self.root / "logs" / f"{name}.log",
            self.env,
        )
        self.procs[name] = proc
        return proc

    # -- the three roles -------------------------------------------------------------
    def start_keyholder(self, extra: Sequence[str] = ()) -> ServiceProcess:
        return self._start(
            "keyholder",
            [
                "keyholder",
                "--kit",
                str(self.kits.keyholder_kit),
                "--state",
                str(self.state("keyholder")),
                *extra,
            ],
        )

    def start_coordinator(self, extra: Sequence[str] = ()) -> ServiceProcess:
        ready = self.state("coordinator.ready.json")
        ready.unlink(missing_ok=True)
        return self._start(
            "coordinator",
            [
                "coordinator",
                "--kit",
                str(self.kits.coordinator_kit),
                "--state",
                str(self.state("coordinator")),
                "--ready-file",
                str(ready),
                *extra,
            ],
        )

    def start_site(self, site_id: str, extra: Sequence[str] = ()) -> ServiceProcess:
        return self._start(
            site_id,
            [
                "participant",
                "--kit",
                str(self.kits.site_kits[site_id]),
                "--state",
                str(self.state(site_id)),
                *extra,
            ],
        )

    def start_all(self, coordinator_extra: Sequence[str] = ()) -> None:
        self.start_keyholder()
        self.start_coordinator(coordinator_extra)
        for site_id in self.cfg.site_ids:
            self.start_site(site_id)

    # -- observation -----------------------------------------------------------------
    def coordinator_ready(self) -> dict[str, int] | None:
        path = self.state("coordinator.ready.json")
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read the coordinator's database (read-only; [] before it exists)."""
        if not self.coordinator_db.exists():
            return []
        try:
            db = sqlite3.connect(f"file:{self.coordinator_db}?mode=ro", uri=True, timeout=5)
            try:
                return list(db.execute(sql, args).fetchall())
            finally:
                db.close()
        except sqlite3.OperationalError:
            return []

    def rounds_done(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM rounds WHERE phase = 'done'")
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def accepted(self, round_no: int) -> list[str]:
        rows = self.query(
            "SELECT site_id FROM submissions WHERE round = ? ORDER BY site_id", (round_no,)
        )
        return [str(r[0]) for r in rows]

    def check_alive(self, names: Sequence[str]) -> None:
        for name in names:
            p = self.procs.get(name)
            if p is not None and not p.alive() and p.proc.returncode != 0:
                raise RuntimeError(
                    f"{name} exited with status {p.proc.returncode}; last log lines:\n"
                    f"{p.log_tail()}"
                )

    def wait_for(
        self,
        condition: Callable[[], bool],
        timeout_s: float,
        what: str,
        watch: Sequence[str] = ("keyholder", "coordinator"),
        poll_s: float = 0.2,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.check_alive(watch)
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(poll_s)

    # -- shutdown --------------------------------------------------------------------
    def stop(self) -> None:
        """Sites first, then the coordinator, then the key holder."""
        order = [n for n in self.procs if n not in ("coordinator", "keyholder")]
        for name in [*order, "coordinator", "keyholder"]:
            p = self.procs.get(name)
            if p is not None:
                p.stop()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
