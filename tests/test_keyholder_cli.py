"""``cipherfed keyholder`` as a real process: first start, health, SIGTERM, restart."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from cipherfed.config import loads_config
from cipherfed.provisioning import ProvisionResult, provision
from crypto import VerifyKey
from crypto.auditlog import read_log, verify_log
from proto.transport import TlsIdentity, check_health, create_channel

ROOT = Path(__file__).resolve().parent.parent

# Run one cipherfed command in its own process without importing every other command
# (``cipherfed.cli`` loads them all; in-process tests cover its dispatch).
COMMAND_LAUNCHER = (
    "import argparse, importlib, logging, sys;"
    "m = importlib.import_module('cipherfed.commands.' + sys.argv[1]);"
    "p = argparse.ArgumentParser(); m.add_arguments(p);"
    "logging.basicConfig(level=logging.INFO);"
    "sys.exit(m.run(p.parse_args(sys.argv[2:])))"
)


def _parse(module: ModuleType, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


FED = """
[federation]
id = "cli-test"
min_participants = 1
rounds = 1
[network]
coordinator = "127.0.0.1:0"
keyholder = "127.0.0.1:0"
[[sites]]
id = "site-a"
data = "actg175:0"
[crypto]
preset = "n4096"
"""


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    return provision(loads_config(FED), tmp_path_factory.mktemp("cli") / "fed")


def _start(kits: ProvisionResult, state: Path) -> tuple[subprocess.Popen[str], int]:
    port_file = state / "keyholder.port"
    port_file.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-c", COMMAND_LAUNCHER, "keyholder",
        "--kit", str(kits.keyholder_kit), "--state", str(state),
        "--address", "127.0.0.1:0", "--grace", "1", "--scrypt-log2n", "10",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"key holder did not start: {out}\n{err}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def test_keyholder_process_lifecycle(kits: ProvisionResult, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, port = _start(kits, state)
    try:
        identity = TlsIdentity.from_kit(kits.coordinator_kit)
        with create_channel(f"127.0.0.1:{port}", identity) as ch:
            assert check_health(ch, "cipherfed.v1.KeyHolder", timeout_s=10)
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert (state / "secret_key.enc").stat().st_mode & 0o777 == 0o600
    assert oct(state.stat().st_mode & 0o777) == oct(0o700)
    first_key = (state / "secret_key.enc").read_bytes()

    proc, port = _start(kits, state)  # restart: the stored key is reused
    code, err = _stop(proc)
    assert code == 0, err
    assert (state / "secret_key.enc").read_bytes() == first_key
    vk = VerifyKey.from_bytes(kits.roster.keyholder.verify_key)
    kinds = [e.kind for e in read_log(state / "audit.jsonl")]
    assert verify_log(state / "audit.jsonl", vk) == len(kinds)
    assert kinds == [
        "keys.generated",
        "keyholder.started",
        "keyholder.stopped",
        "keyholder.started",
        "keyholder.stopped",
    ]


def test_keyholder_refuses_bad_start(
    kits: ProvisionResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cipherfed.commands import keyholder as keyholder_cmd

    site_kit = str(kits.site_kits["site-a"])
    args = _parse(keyholder_cmd, ["--kit", site_kit, "--state", str(tmp_path)])
    assert keyholder_cmd.run(args) == 2
    assert "site kit, expected a keyholder kit" in capsys.readouterr().err
    # A wrong passphrase cannot unlock an existing key.
    state = tmp_path / "state"
    kh_kit = str(kits.keyholder_kit)
    argv = ["--kit", kh_kit, "--state", str(state), "--address", "127.0.0.1:0"]
    running = keyholder_cmd.start(_parse(keyholder_cmd, [*argv, "--scrypt-log2n", "10"]))
    running.stop()
    wrong = tmp_path / "wrong"
    wrong.write_text("a-wrong-passphrase-of-enough-length\n")
    wrong.chmod(0o600)
    args = _parse(keyholder_cmd, [*argv, "--passphrase-file", str(wrong)])
    assert keyholder_cmd.run(args) == 2
    assert "cannot unlock the secret key" in capsys.readouterr().err
    wrong.chmod(0o644)
    assert keyholder_cmd.run(args) == 2
    assert "chmod 600" in capsys.readouterr().err
