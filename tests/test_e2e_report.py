"""The demo's report writer: plots and an HTML page from a results dictionary."""

from __future__ import annotations

from pathlib import Path

from cipherfed.report import write_report


def test_report_has_plots_and_the_headline_figures(tmp_path: Path) -> None:
    per_round = [
        {
            "round": r,
            "training_s": 0.1,
            "encryption_s": 0.02,
            "upload_s": 0.01,
            "aggregation_s": 0.01,
            "decryption_s": 0.03,
        }
        for r in (1, 2)
    ]
    results = {
        "encrypted": {"auc": 0.61, "auc_per_round": [0.6, 0.61], "max_abs_diff_vs_plaintext": 1e-4},
        "plaintext": {"auc": 0.62, "auc_per_round": [0.6, 0.62]},
        "centralized": {"auc": 0.63, "auc_per_round": [0.61, 0.63]},
        "participants": 13,
        "rounds": 2,
        "n_params": 3457,
        "wall_seconds": 100.0,
        "time_split_per_round_s": {"training_s": 0.1},
        "wire_bytes_per_round": {
            "upload_per_participant": 61550.0,
            "plaintext_float32_per_participant": 13828,
            "model_download_per_participant": 27656,
        },
        "per_round": per_round,
        "note": "shared machine",
    }
    page = write_report(results, tmp_path)
    html = page.read_text()
    for name in ("auc.png", "time_split.png", "wire_bytes.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert name in html
    assert "0.6100" in html and "0.6200" in html and "0.6300" in html
