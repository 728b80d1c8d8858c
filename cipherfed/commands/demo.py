"""``cipherfed demo``: run a whole encrypted federation locally and report on it."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

HELP = "run key holder, coordinator and 13 site daemons locally on ACTG 175 (encrypted)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--sites", type=int, default=13, help="number of sites (<= 13)")
    parser.add_argument("--min-participants", type=int, default=10, help="K")
    parser.add_argument("--preset", default="n4096", help="CKKS preset")
    parser.add_argument("--seed", type=int, default=0)
    priv = parser.add_argument_group(
        "privacy",
        "each site's privacy step (default none: the run matches the plaintext reference)",
    )
    priv.add_argument(
        "--privacy",
        choices=("none", "partial", "svt"),
        default="none",
        help="none; partial: share the largest clipped values, no DP; svt: corrected Sparse "
        "Vector Technique (update-level DP, ε recorded in each site's ledger)",
    )
    priv.add_argument(
        "--share",
        type=float,
        metavar="FRACTION",
        help="fraction of the update each site shares (default 0.1 for svt, 0.4 for partial)",
    )
    priv.add_argument(
        "--epsilon",
        type=float,
        metavar="EPS_PER_ROUND",
        help="SVT ε per round and site (default: utility-calibrated, release noise scale = "
        "gamma; that costs ε in the thousands per round, printed at the end)",
    )
    priv.add_argument(
        "--gamma", type=float, default=1e-3, help="per-coordinate clip of ΔW/N_k (default 1e-3)"
    )
    priv.add_argument(
        "--dp-sgd",
        type=float,
        metavar="TARGET_EPS",
        help="also train with patient-level DP-SGD calibrated to this ε over all rounds (δ = 1e-5)",
    )
    priv.add_argument(
        "--budget",
        type=float,
        metavar="EPS",
        help="each site's ε budget (default unlimited); a site refuses rounds past it",
    )


def privacy_summary(p: dict[str, Any]) -> str:
    """One line: mechanism, settings and the largest ε any site's ledger records."""
    if p["mechanism"] == "none" and not p["dp_sgd"]:
        return "privacy: none (whole updates shared; encrypted run = plaintext reference)"
    s = p["settings"]
    parts = [f"privacy: {p['mechanism']}"]
    if p["mechanism"] != "none":
        parts.append(f"share {s['sharing_fraction']:g}, gamma {s['gamma']:g}")
    if p["mechanism"] == "svt":
        parts.append(f"ε/round {s['epsilon_per_round']:,.6g}")
    if s["dp_sgd"] is not None:
        parts.append(f"DP-SGD target ε {s['dp_sgd']['target_epsilon']:g}")
    eps = p["epsilon_max"]
    spent = "none recorded" if eps is None else f"{eps:,.6g}"
    refused = "some site refused a round (budget)" if p["any_refused_for_budget"] else "no refusals"
    parts.append(f"max ε spent per site {spent} at δ={p['delta']:g}; {refused}")
    return ", ".join(parts[:-1]) + "; " + parts[-1]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cipherfed.demo import DemoOptions, run_demo

    if not 1 <= args.sites <= 13 or not 1 <= args.min_participants <= args.sites:
        print("error: need 1 <= --min-participants <= --sites <= 13", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("error: --rounds must be >= 1", file=sys.stderr)
        return 2
    if args.privacy != "svt" and args.epsilon is not None:
        print("error: --epsilon applies to --privacy svt only", file=sys.stderr)
        return 2
    if args.privacy == "none" and args.share is not None:
        print("error: --share needs --privacy partial or svt", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        opts = DemoOptions(
            out=args.out,
            rounds=args.rounds,
            sites=args.sites,
            min_participants=args.min_participants,
            preset=args.preset,
            seed=args.seed,
            privacy=args.privacy,
            share=args.share,
            epsilon=args.epsilon,
            gamma=args.gamma,
            dp_sgd=args.dp_sgd,
            budget_epsilon=math.inf if args.budget is None else args.budget,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]federated rounds"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("rounds", total=args.rounds)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            results = run_demo(opts, progress)
        except KeyboardInterrupt:
            console.print("[red]interrupted; all federation processes were stopped")
            return 130
        except (RuntimeError, TimeoutError) as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
    w = results["wire_bytes_per_round"]
    split = results["time_split_per_round_s"]
    print(f"encrypted federation AUC : {results['encrypted']['auc']:.4f}")
    print(f"plaintext FedAvg AUC     : {results['plaintext']['auc']:.4f}")
    print(f"centralized baseline AUC : {results['centralized']['auc']:.4f}")
    print(
        f"participants {results['participants']}, rounds {results['rounds']}, "
        f"wall {results['wall_seconds']:.1f}s"
    )
    print("mean per-round split (s): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
    print(
        f"upload per participant per round: {w['upload_per_participant']:.0f} bytes "
        f"(plaintext float32 {w['plaintext_float32_per_participant']} bytes, "
        f"x{w['expansion_vs_float32']:.1f})"
    )
    print(privacy_summary(results["privacy"]))
    print(f"results: {args.out / 'results.json'}, report: {args.out / 'report.html'}")
    return 0
