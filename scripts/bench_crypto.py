"""Benchmark the CKKS core: encryption, wire size, weighted sum, decryption, error.

Usage: ``python scripts/bench_crypto.py --params 1000000 --participants 13 --json FILE``.
Prints one JSON object (and writes it to ``--json``). Single-threaded: SEAL runs on the
calling thread and numpy/BLAS is limited to one thread, so "per second" means per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto import (  # noqa: E402
    PRESETS,
    ChunkLayout,
    EncryptedAggregate,
    apply_aggregate,
    encrypt_update,
    weighted_sum,
)
from crypto.secret import SecretContext  # noqa: E402


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=int, default=1_000_000, help="model parameters")
    p.add_argument("--participants", type=int, default=13)
    p.add_argument("--preset", default="n4096", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-weight",
        type=int,
        default=100,
        help="weights (local iterations) drawn in [max/5, max]",
    )
    p.add_argument("--json", type=Path, default=None, help="write the JSON here too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    params = PRESETS[args.preset]
    rng = np.random.default_rng(args.seed)
    n_params, k = args.params, args.participants

    t0 = time.perf_counter()
    secret = SecretContext.generate(params)
    keygen_s = time.perf_counter() - t0
    ctx = secret.public()
    layout = ChunkLayout.from_shapes([("model", (n_params,))], params.values_per_ciphertext)

    # Clipped-update-like data: |x| <= 1, integer weights = local iteration counts.
    vectors = [rng.uniform(-1.0, 1.0, n_params) for _ in range(k)]
    weights = [int(w) for w in rng.integers(args.max_weight // 5, args.max_weight + 1, size=k)]
    if sum(weights) > params.max_weight_sum:
        raise SystemExit(f"weights sum {sum(weights)} > max_weight_sum {params.max_weight_sum}")

    enc_times = []
    enc_cpu = 0.0
    updates = []
    for vec in vectors:
        t0, c0 = time.perf_counter(), time.process_time()
        updates.append(encrypt_update(ctx, layout, vec))
        enc_times.append(time.perf_counter() - t0)
        enc_cpu += time.process_time() - c0
    dense_bytes = updates[0].wire_bytes()

    tenth = list(range(0, layout.n_chunks, 10))
    sparse = encrypt_update(ctx, layout, vectors[0], chunk_ids=tenth)
    sparse_bytes = sparse.wire_bytes()

    t0, c0 = time.perf_counter(), time.process_time()
    agg = weighted_sum(ctx, updates, weights)
    wsum_s = time.perf_counter() - t0
    wsum_cpu = time.process_time() - c0
    agg_bytes = len(agg.to_bytes())
    agg = EncryptedAggregate.from_bytes(agg.to_bytes())

    # The same weighted sum in plaintext: numpy float32, one pass per participant.
    f32 = [v.astype(np.float32) for v in vectors]
    reps = 5
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        acc = np.zeros(n_params, dtype=np.float32)
        for w, v in zip(weights, f32, strict=True):
            acc += np.float32(w) * v
    plain_s = (time.perf_counter() - t0) / reps
    plain_cpu = (time.process_time() - c0) / reps

    exact = secret._decrypt_exact(agg)
    t0, c0 = time.perf_counter(), time.process_time()
    released = secret.decrypt_aggregate(agg, np.random.default_rng(args.seed + 1))
    dec_s = time.perf_counter() - t0
    dec_cpu = time.process_time() - c0

    wsum = sum(weights)
    reference = sum(w * v for w, v in zip(weights, vectors, strict=True)) / wsum
    zero = np.zeros(n_params)
    mean_exact = apply_aggregate(zero, layout, exact, agg.normalizers)
    mean_flooded = apply_aggregate(zero, layout, released, agg.normalizers)
    err_exact = np.abs(mean_exact - reference)
    err_flooded = np.abs(mean_flooded - reference)
    sum_ref = sum(w * v for w, v in zip(weights, vectors, strict=True))
    sum_err = np.concatenate([exact[c] - sum_ref[layout.chunk_slice(c)] for c in sorted(exact)])

    enc_total = sum(enc_times)
    result = {
        "encrypt_params_per_s": n_params * k / enc_total,
        "wire_bytes_per_param": dense_bytes / n_params,
        "wsum_params_per_s": n_params * k / wsum_s,
        "decrypt_params_per_s": n_params / dec_s,
        "max_abs_error": float(err_exact.max()),
        "max_abs_error_flooded": float(err_flooded.max()),
        "plaintext_wsum_params_per_s": n_params * k / plain_s,
        # extras
        "preset": params.name,
        "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
        "scale_bits": params.scale_bits,
        "values_per_ciphertext": params.values_per_ciphertext,
        "params": n_params,
        "participants": k,
        "weights": weights,
        "n_chunks": layout.n_chunks,
        "wire_bytes_per_param_10pct_chunks": sparse_bytes / n_params,
        "wire_bytes_per_sent_param_10pct_chunks": sparse_bytes
        / sum(len(range(*layout.chunk_slice(c).indices(n_params))) for c in tenth),
        "aggregate_bytes_per_param": agg_bytes / n_params,
        "wsum_model_params_per_s": n_params / wsum_s,
        "encrypt_params_per_cpu_s": n_params * k / enc_cpu,
        "wsum_params_per_cpu_s": n_params * k / wsum_cpu,
        "decrypt_params_per_cpu_s": n_params / dec_cpu,
        "plaintext_wsum_params_per_cpu_s": n_params * k / plain_cpu,
        "load_average_1min_at_end": os.getloadavg()[0],
        "plaintext_wsum_model_params_per_s": n_params / plain_s,
        "ratio_wsum_plaintext_over_he": (n_params * k / plain_s) / (n_params * k / wsum_s),
        "ratio_wire_bytes_he_over_float32": (dense_bytes / n_params) / 4.0,
        "encrypt_seconds_per_participant": enc_total / k,
        "wsum_seconds": wsum_s,
        "decrypt_seconds": dec_s,
        "plaintext_wsum_seconds": plain_s,
        "keygen_seconds": keygen_s,
        "decryption_error_std_sum_measured": float(np.std(sum_err)),
        "decryption_error_std_sum_bound": secret.decryption_error_std_bound(wsum),
        "flood_std_sum": secret.flood_std(wsum),
        "flood_std_mean": secret.flood_std(wsum) / wsum,
        "mean_abs_error_flooded": float(err_flooded.mean()),
        "threads": 1,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, shared with other jobs",
        "note": "*_per_s: wall clock; *_per_cpu_s: process CPU time (single thread). wsum and "
        "plaintext_wsum count params x participants; *_model_params_per_s count the model once.",
    }
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
