"""``cipherfed simulate --plaintext``: the in-process federated reference run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cipherfed.simulation import DEFAULT_TRAIN, RoundMetrics, SimulationConfig, run_simulation
from participant.data import DatasetUnavailable
from participant.training import EvalMetrics, TrainConfig

logger = logging.getLogger(__name__)

HELP = "Run a plaintext federated simulation on ACTG 175 in one process and write JSON metrics."


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        msg = f"--hidden: {text!r} is not a comma list of ints"
        raise argparse.ArgumentTypeError(msg) from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden: {text!r} needs widths >= 1")
    return widths


def _optional_float(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'none'") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="required: no encryption (the encrypted path is `cipherfed demo`)",
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--sites", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="Dirichlet skew over label x stratum (small = more skewed)",
    )
    parser.add_argument(
        "--partition-column",
        default=None,
        help="split sites by this raw column instead of Dirichlet skew",
    )
    parser.add_argument(
        "--local-epochs",
        type=float,
        default=DEFAULT_TRAIN.local_epochs,
        help="N_k = ceil(epochs * n_k / batch_size)",
    )
    parser.add_argument(
        "--local-iters",
        type=int,
        default=None,
        help="fixed N_k for every site (overrides --local-epochs)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_TRAIN.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULT_TRAIN.lr)
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_TRAIN.weight_decay)
    parser.add_argument(
        "--pos-weight",
        type=_optional_float,
        default=DEFAULT_TRAIN.pos_weight,
        help="weight of positive labels in the loss, or 'none' (default %(default)s)",
    )
    parser.add_argument(
        "--no-momentum-restart", action="store_true", help="keep Adam state across rounds"
    )
    parser.add_argument("--weighting", choices=["iterations", "uniform"], default="iterations")
    parser.add_argument("--hidden", type=_widths, default=(64, 32), help="e.g. 64,32")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument(
        "--no-centralized", action="store_true", help="skip the centralized baseline"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest for these small models)",
    )


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    train = TrainConfig(
        local_epochs=None if args.local_iters is not None else args.local_epochs,
        local_iters=args.local_iters,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum_restart=not args.no_momentum_restart,
        weight_decay=args.weight_decay,
        pos_weight=args.pos_weight,
    )
    return SimulationConfig(
        rounds=args.rounds,
        n_sites=args.sites,
        seed=args.seed,
        alpha=args.alpha,
        partition_column=args.partition_column,
        hidden=tuple(args.hidden),
        dropout=args.dropout,
        train=train,
        weighting=args.weighting,
        centralized=not args.no_centralized,
        device=args.device,
    )


def _summary(m: EvalMetrics) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    return f"AUC {f(m.auc)} acc {f(m.accuracy)} loss {f(m.loss)}"


def _auc(m: EvalMetrics | None) -> str:
    return "n/a" if m is None or m.auc is None else f"{m.auc:.3f}"


def run(args: argparse.Namespace) -> int:
    if not args.plaintext:
        print(
            "cipherfed simulate: pass --plaintext (this command runs no encryption); the "
            "encrypted federation is `cipherfed demo`.",
            file=sys.stderr,
        )
        return 2
    if args.threads < 1:
        print("cipherfed simulate: --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"cipherfed simulate: invalid setting: {exc}", file=sys.stderr)
        return 2

    with Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=args.no_progress,
    ) as progress:
        task = progress.add_task("rounds", total=config.rounds, status="")

        def on_round(m: RoundMetrics) -> None:
            status = f"fed AUC {_auc(m.federated)}  central AUC {_auc(m.centralized)}"
            progress.update(task, advance=1, status=status)

        try:
            result = run_simulation(config, on_round=on_round)
        except (ValueError, DatasetUnavailable) as exc:
            print(f"cipherfed simulate: {exc}", file=sys.stderr)
            return 2

    payload = result.to_json_dict()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    line = "federated " + _summary(result.federated)
    if result.centralized is not None:
        line += " | centralized " + _summary(result.centralized)
    print(line)
    print(f"wrote {args.out} ({result.wall_seconds:.1f} s)")
    return 0
