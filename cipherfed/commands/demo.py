"""``cipherfed demo``: run a whole encrypted federation locally and report on it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

HELP = "run key holder, coordinator and 13 site daemons locally on ACTG 175 (encrypted)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--sites", type=int, default=13, help="number of sites (<= 13)")
    parser.add_argument("--min-participants", type=int, default=10, help="K")
    parser.add_argument("--preset", default="n4096", help="CKKS preset")
    parser.add_argument("--seed", type=int, default=0)


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
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    opts = DemoOptions(
        out=args.out,
        rounds=args.rounds,
        sites=args.sites,
        min_participants=args.min_participants,
        preset=args.preset,
        seed=args.seed,
    )
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
    print(f"results: {args.out / 'results.json'}, report: {args.out / 'report.html'}")
    return 0
