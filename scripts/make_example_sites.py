"""Write the example federation's CSV files from disjoint slices of ACTG 175.

Reads the ``[schema]`` of ``examples/federation.toml`` and writes, from one seeded shuffle
of ACTG 175 (lifelines 0.30.3, checked by SHA-256), ``--rows`` rows each to
``examples/sites/site-a.csv``, ``site-b.csv``, ``site-c.csv`` and ``examples/validation.csv``
(disjoint), keeping only the schema's columns. Every file is checked against the schema
before it is written. The outputs are committed; rerun only to regenerate them.

Usage (from the repository root): ``python -m scripts.make_example_sites [--rows 150] [--seed 175]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from participant.data import actg175_frame
from participant.schema import FederationSchema, encode_frame

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
OUTPUTS = ("sites/site-a.csv", "sites/site-b.csv", "sites/site-c.csv", "validation.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150, help="rows per file")
    parser.add_argument("--seed", type=int, default=175, help="shuffle seed")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows {args.rows} must be >= 1")

    schema = FederationSchema.from_toml(EXAMPLES / "federation.toml")
    frame = actg175_frame()
    order = np.random.default_rng(args.seed).permutation(len(frame))
    if args.rows * len(OUTPUTS) > len(frame):
        parser.error(f"--rows {args.rows} x {len(OUTPUTS)} files exceeds {len(frame)} rows")
    for i, name in enumerate(OUTPUTS):
        rows = order[i * args.rows : (i + 1) * args.rows]
        part = frame.iloc[np.sort(rows)][list(schema.columns)]
        encode_frame(part, schema, source=name)  # fails loudly if a value breaks the schema
        out = EXAMPLES / name
        out.parent.mkdir(parents=True, exist_ok=True)
        part.to_csv(out, index=False)
        rate = float(part[schema.target].mean())
        print(f"{out.relative_to(ROOT)}: {len(part)} rows, positive rate {rate:.3f}")


if __name__ == "__main__":
    main()
