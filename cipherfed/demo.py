"""``cipherfed demo``: a throw-away encrypted federation on ACTG 175, end to end.

Provisions a federation of 13 sites into ``<out>/federation``, runs the key holder, the
coordinator and one participant daemon per site as separate processes on loopback (mutual
TLS, CKKS encryption on), shows progress, then evaluates every global checkpoint on the
held-out validation set and compares with the plaintext FedAvg reference (the in-process
simulation with the same seeds, partitions and configuration) and the centralized
baseline. Writes ``<out>/results.json`` and ``<out>/report.html`` with PNG plots.

``DemoOptions.privacy`` turns on a site privacy step (``"partial"`` or ``"svt"``, optionally
with patient-level DP-SGD): the daemons run it with their privacy ledgers, the plaintext
reference runs the same mechanism with the same settings (its own, independent noise), and
the results gain a ``"privacy"`` block with the ε every site's ledger records.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
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
    DPSGDSection,
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

PRIVACY_MECHANISMS = ("none", "partial", "svt")
#: Sharing fraction when ``--share`` is not given (SVT: the documented default Q; partial
#: sharing: the paper's "share 40%").
DEFAULT_SHARE = {"svt": 0.1, "partial": 0.4}
DEFAULT_GAMMA = 1e-3  # per-coordinate clip of ΔW/N_k (SVTConfig's default)
DEFAULT_TAU = 1e-4  # SVT threshold (SVTConfig's default)
DELTA = 1e-5


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
    privacy: str = "none"  # "none" | "partial" | "svt"
    share: float | None = None  # sharing fraction Q (default: DEFAULT_SHARE)
    epsilon: float | None = None  # SVT ε per round; None: utility-calibrated (noise scale γ)
    gamma: float = DEFAULT_GAMMA
    dp_sgd: float | None = None  # patient-level DP-SGD target ε over all rounds
    budget_epsilon: float = math.inf  # each site's ledger budget

    def __post_init__(self) -> None:
        if self.privacy not in PRIVACY_MECHANISMS:
            raise ValueError(f"privacy must be one of {PRIVACY_MECHANISMS}, got {self.privacy!r}")
        if self.share is not None and not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], got {self.share}")
        for name in ("epsilon", "dp_sgd"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not self.gamma > 0 or not self.budget_epsilon > 0:
            raise ValueError("gamma and budget_epsilon must be > 0")


def demo_privacy(opts: DemoOptions, n_params: int) -> PrivacyConfig:
    """The ``[privacy]`` table of the demo federation.

    SVT without ``epsilon`` is utility-calibrated: the per-round ε is the one at which the
    release noise has Laplace scale γ (``SVTConfig(epsilon=None)``), written into the
    federation file as a fixed number so the daemons and the reference spend exactly it.
    """
    dp_sgd = None
    if opts.dp_sgd is not None:
        dp_sgd = DPSGDSection(target_epsilon=opts.dp_sgd, target_delta=DELTA)
    if opts.privacy == "none":
        return PrivacyConfig(
            mechanism="none", delta=DELTA, dp_sgd=dp_sgd, budget_epsilon=opts.budget_epsilon
        )
    share = opts.share if opts.share is not None else DEFAULT_SHARE[opts.privacy]
    epsilon = opts.epsilon
    if opts.privacy == "svt" and epsilon is None:
        from participant.privacy.config import SVTConfig
        from participant.privacy.svt import svt_budget

        calibrated = SVTConfig(fraction=share, gamma=opts.gamma, tau=DEFAULT_TAU, epsilon=None)
        epsilon = svt_budget(calibrated, n_params).epsilon
    return PrivacyConfig(
        mechanism="svt" if opts.privacy == "svt" else "partial",
        sharing_fraction=share,
        gamma=opts.gamma,
        epsilon=1.0 if epsilon is None else epsilon,  # unused by partial sharing
        budget_epsilon=opts.budget_epsilon,
        delta=DELTA,
        threshold=DEFAULT_TAU,
        dp_sgd=dp_sgd,
    )


def demo_config(opts: DemoOptions, coordinator_port: int, keyholder_port: int) -> FederationConfig:
    cfg = _demo_config(opts, coordinator_port, keyholder_port)
    n_params = site_setup.chunk_layout(cfg).total
    return dataclasses.replace(cfg, privacy=demo_privacy(opts, n_params))


def _demo_config(opts: DemoOptions, coordinator_port: int, keyholder_port: int) -> FederationConfig:
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
    result = run_simulation(
        site_setup.simulation_config(cfg), privacy_step=site_setup.simulation_privacy_step(cfg)
    )
    return result, time.perf_counter() - t0


def privacy_on(cfg: FederationConfig) -> bool:
    return cfg.privacy.mechanism != "none" or cfg.privacy.dp_sgd is not None


def collect_privacy(fed: LocalFederation) -> dict[str, Any]:
    """The ``"privacy"`` block: settings, and each site's ε read back from its own ledger."""
    from cipherfed.commands.participant import LEDGER_FILE
    from participant.privacy.ledger import PrivacyLedger
    from participant.state import DaemonState, RoundStatus

    p = fed.cfg.privacy
    settings: dict[str, Any] = {"delta": p.delta}
    if p.mechanism != "none":
        settings |= {"sharing_fraction": p.sharing_fraction, "gamma": p.gamma}
    if p.mechanism == "svt":
        settings |= {"epsilon_per_round": p.epsilon, "threshold": p.threshold}
    settings["budget_epsilon"] = p.budget_epsilon if math.isfinite(p.budget_epsilon) else None
    settings["dp_sgd"] = None if p.dp_sgd is None else dataclasses.asdict(p.dp_sgd)
    sites: dict[str, Any] = {}
    refused: dict[str, list[int]] = {}
    for site_id in fed.cfg.site_ids:
        state = fed.state(site_id)
        path = state / LEDGER_FILE
        entry: dict[str, Any] = {"epsilon": None, "rounds_recorded": 0}
        if path.exists():
            ledger = PrivacyLedger(
                path,
                p.delta,
                p.budget_epsilon if math.isfinite(p.budget_epsilon) else 1e300,
                site_id,
            )
            try:
                report = ledger.report()
                entry = {
                    "epsilon": report["epsilon_total"],
                    "epsilon_by_mechanism": report["epsilon_by_mechanism"],
                    "rounds_recorded": report["rounds"],
                    "non_private_rounds": len(ledger.non_private_rounds()),
                }
            finally:
                ledger.close()
        daemon_db = state / "daemon.sqlite"
        if daemon_db.exists():
            ds = DaemonState(daemon_db)
            try:
                refused_here = [
                    r.round
                    for r in ds.records()
                    if r.status is RoundStatus.SKIPPED and r.reason.startswith("privacy:")
                ]
            finally:
                ds.close()
            if refused_here:
                refused[site_id] = refused_here
        entry["rounds_refused"] = refused.get(site_id, [])
        sites[site_id] = entry
    spent = [e["epsilon"] for e in sites.values() if e["epsilon"] is not None]
    return {
        "mechanism": p.mechanism,
        "dp_sgd": p.dp_sgd is not None,
        "settings": settings,
        "delta": p.delta,
        "epsilon_per_site": sites,
        "epsilon_max": max(spent) if spent else None,
        "any_refused_for_budget": bool(refused),
        "refused_rounds": refused,
        "guarantee": (
            "SVT: update level (one site's whole update replaced); DP-SGD: patient level; "
            "partial sharing: none (compression, not privacy)"
        ),
        "reference_note": (
            "the plaintext FedAvg reference applies the same mechanism with the same "
            "settings but its own, independent noise; encrypted and plaintext AUC are "
            "comparable, the weights are not expected to match"
        ),
    }


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

    privacy = collect_privacy(fed) if privacy_on(fed.cfg) else None
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
        "privacy": privacy if privacy is not None else {"mechanism": "none", "dp_sgd": False},
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from cipherfed.report import write_report

    write_report(results, opts.out)
    results["wall_seconds"] = time.perf_counter() - started
    (opts.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
