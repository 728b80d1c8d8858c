"""``cipherfed demo``: a throw-away encrypted federation on ACTG 175, end to end.

Provisions a federation of 13 sites into ``<out>/federation``, runs the key holder, the
coordinator and one participant daemon per site as separate processes on loopback (mutual
TLS, CKKS encryption on), shows progress, then evaluates every global checkpoint on the
held-out validation set and compares with the plaintext FedAvg reference (the in-process
simulation with the same seeds, partitions and configuration) and the centralized
baseline. Writes ``<out>/results.json`` and ``<out>/report.html`` with PNG plots.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfed import site_setup
from cipherfed.config import (
    CryptoConfig,
    FederationConfig,
    FederationSection,
    ModelConfig,
    NetworkConfig,
    PrivacyConfig,
    SiteConfig,
    TrainingConfig,
)
from cipherfed.localfed import LocalFederation, free_port
from cipherfed.simulation import SimulationResult, run_simulation
from coordinator.blobs import BlobStore
from coordinator.service import model_from_bytes
from coordinator.store import CoordinatorStore
from participant.model import load_flat
from participant.training import evaluate

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    rounds: int = 20
    sites: int = 13
    min_participants: int = 10
    deadline_s: float = 120.0
    preset: str = "n4096"
    seed: int = 0
    lr: float = 1e-3
    timeout_s: float = 900.0


def demo_config(opts: DemoOptions, coordinator_port: int, keyholder_port: int) -> FederationConfig:
    return FederationConfig(
        federation=FederationSection(
            id="cipherfed-demo",
            min_participants=opts.min_participants,
            rounds=opts.rounds,
            round_deadline_s=opts.deadline_s,
            weighting="iterations",
        ),
        network=NetworkConfig(
            coordinator=f"127.0.0.1:{coordinator_port}",
            keyholder=f"127.0.0.1:{keyholder_port}",
            metrics_port=0,
        ),
        sites=tuple(SiteConfig(f"site-{k:02d}", f"actg175:{k}") for k in range(opts.sites)),
        model=ModelConfig(),
        training=TrainingConfig(local_epochs=1.0, batch_size=32, lr=opts.lr, seed=opts.seed),
        privacy=PrivacyConfig(mechanism="none"),
        crypto=CryptoConfig(preset=opts.preset),
    )


def run_federation(
    fed: LocalFederation, rounds: int, timeout_s: float, progress: ProgressFn | None = None
) -> None:
    """Start every process and wait until the coordinator has finished all rounds."""
    fed.start_all(coordinator_extra=["--exit-after-finish", "3"])
    deadline = time.monotonic() + timeout_s
    coordinator = fed.service("coordinator")
    done = -1
    while coordinator.alive():
        fed.check_alive(["keyholder", "coordinator"])
        now_done = fed.rounds_done()
        if now_done != done and progress is not None:
            progress(now_done, rounds)
        done = now_done
        if time.monotonic() > deadline:
            raise TimeoutError(f"federation did not finish {rounds} rounds in {timeout_s:.0f}s")
        time.sleep(0.25)
    if coordinator.proc.returncode != 0 or fed.rounds_done() != rounds:
        raise RuntimeError(
            f"coordinator stopped (status {coordinator.proc.returncode}) after "
            f"{fed.rounds_done()} of {rounds} rounds:\n{coordinator.log_tail()}"
        )
    if progress is not None:
        progress(rounds, rounds)
    sites = [p for n, p in fed.procs.items() if n not in ("coordinator", "keyholder")]
    end = time.monotonic() + 15
    while any(p.alive() for p in sites) and time.monotonic() < end:
        time.sleep(0.2)


def _mean(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def collect_round_stats(state: Path) -> list[dict[str, Any]]:
    """Per round: participants, time split (mean over sites where per site) and wire bytes."""
    store = CoordinatorStore(state / "coordinator.sqlite")
    try:
        out = []
        for row in store.round_stats():
            subs = store.submissions(row["round"])

            def per_site(key: str, subs: Any = subs) -> float:
                return _mean([s.timings[key] for s in subs if key in s.timings])

            out.append(
                {
                    "round": row["round"],
                    "participants": row["participants"],
                    "outcome": row["outcome"],
                    "round_seconds": row["closed_at"] - row["opened_at"],
                    "training_s": per_site("train_s"),
                    "privacy_s": per_site("privacy_s"),
                    "encryption_s": per_site("encrypt_s"),
                    "download_s": per_site("download_s"),
                    "upload_s": per_site("upload_s"),
                    "aggregation_s": float(row["stats"].get("aggregation_s", 0.0)),
                    "decryption_s": float(row["stats"].get("decryption_s", 0.0)),
                    "upload_bytes_per_participant": _mean([float(s.n_bytes) for s in subs]),
                    "upload_bytes_total": float(sum(s.n_bytes for s in subs)),
                }
            )
        return out
    finally:
        store.close()


def checkpoints(state: Path, total: int) -> list[np.ndarray]:
    """``W(0), W(1), ...`` from the coordinator's store."""
    store = CoordinatorStore(state / "coordinator.sqlite")
    blobs = BlobStore(state / "blobs")
    try:
        return [model_from_bytes(blobs.get(d), total) for _, d in store.checkpoints()]
    finally:
        store.close()


def evaluate_checkpoints(cfg: FederationConfig, flats: list[np.ndarray]) -> list[float | None]:
    val = site_setup.validation_set(cfg)
    model = site_setup.model_factory(cfg)()
    aucs: list[float | None] = []
    for flat in flats:
        load_flat(model, flat)
        aucs.append(evaluate(model, val).auc)
    return aucs


def _timed_reference(cfg: FederationConfig) -> tuple[SimulationResult, float]:
    t0 = time.perf_counter()
    result = run_simulation(site_setup.simulation_config(cfg))
    return result, time.perf_counter() - t0


def run_demo(opts: DemoOptions, progress: ProgressFn | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    root = opts.out / "federation"
    if root.exists():
        shutil.rmtree(root)
    cfg = demo_config(opts, free_port(), free_port())
    pool = ThreadPoolExecutor(1, thread_name_prefix="reference")
    with pool, LocalFederation(root, cfg) as fed:
        # The plaintext reference runs in this process while the federation (mostly
        # waiting on the network between rounds) runs in its own processes.
        reference = pool.submit(_timed_reference, fed.cfg)
        run_federation(fed, opts.rounds, opts.timeout_s, progress)
        federation_seconds = time.perf_counter() - started
        ref, reference_seconds = reference.result()
    state = fed.state("coordinator")
    layout = site_setup.chunk_layout(fed.cfg)
    flats = checkpoints(state, layout.total)
    enc_aucs = evaluate_checkpoints(fed.cfg, flats)
    per_round = collect_round_stats(state)

    n_params = layout.total
    upload = _mean([r["upload_bytes_per_participant"] for r in per_round])
    split_keys = ("training_s", "encryption_s", "upload_s", "aggregation_s", "decryption_s")
    results: dict[str, Any] = {
        "encrypted": {
            "auc": enc_aucs[-1],
            "auc_per_round": enc_aucs[1:],
            "max_abs_diff_vs_plaintext": float(np.abs(flats[-1] - ref.final_flat).max()),
        },
        "plaintext": {
            "auc": ref.federated.auc,
            "auc_per_round": [r.federated.auc for r in ref.rounds],
        },
        "centralized": {
            "auc": None if ref.centralized is None else ref.centralized.auc,
            "auc_per_round": [
                None if r.centralized is None else r.centralized.auc for r in ref.rounds
            ],
        },
        "majority_class_auc": ref.majority.auc,
        "participants": len(fed.cfg.sites),
        "rounds": opts.rounds,
        "min_participants": opts.min_participants,
        "ckks_preset": site_setup.ckks_params(fed.cfg).name,
        "n_params": n_params,
        "n_chunks": layout.n_chunks,
        "wall_seconds": time.perf_counter() - started,
        "federation_seconds": federation_seconds,
        "reference_seconds": reference_seconds,
        "wire_bytes_per_round": {
            "upload_per_participant": upload,
            "upload_all_participants": _mean([r["upload_bytes_total"] for r in per_round]),
            "model_download_per_participant": 8 * n_params,
            "plaintext_float32_per_participant": 4 * n_params,
            "expansion_vs_float32": upload / (4 * n_params),
        },
        "time_split_per_round_s": {k: _mean([r[k] for r in per_round]) for k in split_keys},
        "round_seconds_mean": _mean([r["round_seconds"] for r in per_round]),
        # round 1 also waits for every process to start
        "round_seconds_mean_after_first": _mean([r["round_seconds"] for r in per_round[1:]]),
        "per_round": per_round,
        "note": "measured on a shared 2-core machine; timings are noisy",
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from cipherfed.report import write_report

    write_report(results, opts.out)
    results["wall_seconds"] = time.perf_counter() - started
    (opts.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
