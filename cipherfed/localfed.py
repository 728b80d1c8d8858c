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


def cli_argv(args: Sequence[str]) -> list[str]:
    """``cipherfed <args>`` through :func:`run_one_command` (see there)."""
    return [sys.executable, "-m", "cipherfed.localfed", "run", *args]


def run_one_command(argv: Sequence[str]) -> int:
    """``cipherfed [--log-level L] COMMAND ...`` importing only that command's module.

    ``cipherfed.cli`` imports every command to build its parser (the simulation pulls in
    torch, scipy and pandas); a key holder or coordinator started here skips that.
    """
    import argparse
    import importlib

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level", default="INFO")
    pre.add_argument("command")
    known, rest = pre.parse_known_args(argv)
    module = importlib.import_module(f"cipherfed.commands.{known.command}")
    parser = argparse.ArgumentParser(prog=f"cipherfed {known.command}")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(
        level=getattr(logging, known.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(module.run(args))


class ServiceProcess:
    """One child process (``argv``) with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.args = list(argv)
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


class ForkedSite:
    """A site daemon forked by the site launcher (see :func:`fork_sites_main`)."""

    def __init__(self, name: str, pid: int, log_path: Path) -> None:
        self.name = name
        self.pid = pid
        self.log_path = log_path

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self._wait_gone(10.0)

    def stop(self, timeout_s: float = 10.0) -> int:
        self.signal(signal.SIGTERM)
        if not self._wait_gone(timeout_s):
            self.kill()
        return 0

    def _wait_gone(self, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def fork_sites_main(spec_path: str) -> int:
    """Site launcher: import the participant code once, then fork one daemon per site.

    Each child is a separate process running ``cipherfed participant`` with its own log
    file; forking after the (slow) imports of torch & co. saves ~10 CPU-seconds per site.
    No gRPC object exists before the fork. SIGTERM is forwarded to every child.
    """
    spec = json.loads(Path(spec_path).read_text())
    import cipherfed.commands.participant
    import cipherfed.site_setup  # noqa: F401
    import participant.training  # noqa: F401

    children: dict[int, str] = {}
    for site in spec["sites"]:
        pid = os.fork()
        if pid == 0:  # the site daemon
            code = 1
            try:
                fd = os.open(site["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                _die_with_parent()
                code = run_one_command(site["argv"])
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = site["name"]
    pids = {name: pid for pid, name in children.items()}
    tmp = Path(spec["pids"] + ".tmp")
    tmp.write_text(json.dumps(pids))
    os.replace(tmp, spec["pids"])

    def forward(signum: int, frame: object) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while children:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            break
        children.pop(pid, None)
    return 0


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
        self.procs: dict[str, ServiceProcess | ForkedSite] = {}

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
            cli_argv(["--log-level", self.log_level, *args]),
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

    def site_args(self, site_id: str, extra: Sequence[str] = ()) -> list[str]:
        return [
            "--log-level",
            self.log_level,
            "participant",
            "--kit",
            str(self.kits.site_kits[site_id]),
            "--state",
            str(self.state(site_id)),
            *extra,
        ]

    def start_sites_forked(
        self, site_ids: Sequence[str], extra: Sequence[str] = (), timeout_s: float = 300.0
    ) -> None:
        """Start the sites as children of one launcher process (see :func:`fork_sites_main`)."""
        spec_path = self.root / "sites-launch.json"
        pids_path = self.root / "sites-launch.pids.json"
        pids_path.unlink(missing_ok=True)
        spec = {
            "sites": [
                {
                    "name": s,
                    "argv": self.site_args(s, extra),
                    "log": str(self.root / "logs" / f"{s}.log"),
                }
                for s in site_ids
            ],
            "pids": str(pids_path),
        }
        spec_path.write_text(json.dumps(spec))
        launcher = ServiceProcess(
            "site-launcher",
            [sys.executable, "-m", "cipherfed.localfed", "sites", str(spec_path)],
            self.root / "logs" / "site-launcher.log",
            self.env,
        )
        self.procs["site-launcher"] = launcher
        end = time.monotonic() + timeout_s
        while not pids_path.exists():
            if not launcher.alive():
                raise RuntimeError(f"site launcher failed:\n{launcher.log_tail()}")
            if time.monotonic() > end:
                raise TimeoutError("site launcher did not start the sites in time")
            time.sleep(0.1)
        for name, pid in json.loads(pids_path.read_text()).items():
            self.procs[name] = ForkedSite(name, int(pid), self.root / "logs" / f"{name}.log")

    def start_all(self, coordinator_extra: Sequence[str] = (), forked: bool = True) -> None:
        self.start_keyholder()
        self.start_coordinator(coordinator_extra)
        if forked:
            self.start_sites_forked(self.cfg.site_ids)
        else:
            for site_id in self.cfg.site_ids:
                self.start_site(site_id)

    # -- observation -----------------------------------------------------------------
    def service(self, name: str) -> ServiceProcess:
        """The key holder, coordinator or site launcher process."""
        proc = self.procs[name]
        if not isinstance(proc, ServiceProcess):
            raise TypeError(f"{name} is a forked site, not a service process")
        return proc

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
            if isinstance(p, ServiceProcess) and not p.alive() and p.proc.returncode != 0:
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
    def stop(self, timeout_s: float = 10.0) -> None:
        """Sites first (all at once), then the coordinator, then the key holder."""
        roles = ("coordinator", "keyholder", "site-launcher")
        sites = [p for n, p in self.procs.items() if n not in roles]
        for group in (
            sites,
            [self.procs.get("site-launcher")],
            [self.procs.get("coordinator")],
            [self.procs.get("keyholder")],
        ):
            members = [p for p in group if p is not None]
            for p in members:
                p.signal(signal.SIGTERM)
            end = time.monotonic() + timeout_s
            while any(p.alive() for p in members) and time.monotonic() < end:
                time.sleep(0.05)
            for p in members:
                p.stop(0.1)  # SIGKILL what is left; closes log files

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["sites"]:
        sys.exit(fork_sites_main(sys.argv[2]))
    sys.exit(run_one_command(sys.argv[2:] if sys.argv[1:2] == ["run"] else sys.argv[1:]))
