"""The benchmark script runs and reports exactly the issue's keys (tiny size, not a timing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_crypto.py"
REQUIRED = {
    "encrypt_params_per_s",
    "wire_bytes_per_param",
    "wsum_params_per_s",
    "decrypt_params_per_s",
    "max_abs_error",
    "max_abs_error_flooded",
    "plaintext_wsum_params_per_s",
}


def test_bench_crypto_small_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_crypto", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    assert module.main(["--params", "8192", "--participants", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert set(result) >= REQUIRED
    assert all(result[k] > 0 for k in REQUIRED if k.endswith("_per_s"))
    assert result["max_abs_error"] <= 1e-6
    assert result["max_abs_error_flooded"] <= 1e-4
    assert result["wire_bytes_per_param"] <= 15.05  # two full chunks
