"""A real federation of separate processes on loopback (key holder, coordinator, 3 sites).

One run covers, in order:
1. a participant SIGKILLed mid-federation: the next round completes with the other two
   (K = 2) at its deadline;
2. the coordinator SIGKILLed mid-round (two updates accepted) and restarted: it resumes the
   round with both updates, and the round completes without any site sending again;
3. the encrypted round 1 equals the plaintext FedAvg reference up to the flooding noise.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cipherfed import site_setup
from cipherfed.demo import checkpoints, collect_round_stats
from cipherfed.localfed import LocalFederation
from cipherfed.simulation import run_simulation
from participant.state import DaemonState, RoundStatus
from tests.e2e_helpers import small_config

pytestmark = pytest.mark.slow

DEADLINE_S = 15.0
ROUNDS = 3
SERVICES = ("keyholder", "coordinator")


def test_federation_survives_kills_and_matches_plaintext(tmp_path: Path) -> None:
    cfg = small_config(3, k=2, rounds=ROUNDS, deadline_s=DEADLINE_S)
    pool = ThreadPoolExecutor(1)
    with pool, LocalFederation(tmp_path, cfg) as fed:
        # the plaintext reference of round 1, computed while the federation runs
        reference = pool.submit(run_simulation, site_setup.simulation_config(fed.cfg, rounds=1))
        fed.start_keyholder(["--scrypt-log2n", "10"])
        fed.start_sites_forked(fed.cfg.site_ids)
        fed.start_coordinator()
        fed.wait_for(lambda: fed.rounds_done() >= 1, 300, "round 1", SERVICES, poll_s=0.02)

        # -- 1. a participant killed: the next round completes with the others --------
        fed.procs["site-02"].kill()
        assert fed.accepted(1) == ["site-00", "site-01", "site-02"]
        killed_at = fed.rounds_done()
        t = killed_at + 1 if "site-02" not in fed.accepted(killed_at + 1) else killed_at + 2
        assert t <= ROUNDS
        fed.wait_for(
            lambda: fed.accepted(t) == ["site-00", "site-01"], 120, f"round {t} updates", SERVICES
        )

        # -- 2. the coordinator SIGKILLed mid-round, restarted: nothing lost ----------
        assert fed.rounds_done() == t - 1  # round t is open, waiting for site-02
        fed.procs["coordinator"].kill()
        fed.start_coordinator()
        fed.wait_for(lambda: fed.rounds_done() >= t, 240, f"round {t} after restart", SERVICES)
        assert fed.accepted(t) == ["site-00", "site-01"]
        [(n,)] = fed.query("SELECT n_accepted FROM rounds WHERE round = ?", (t,))
        assert n == 2
        fed.wait_for(lambda: fed.rounds_done() == ROUNDS, 240, "all rounds", SERVICES)

        # -- 3. round 1 equals the plaintext reference up to flooding (checked last) --
        layout = site_setup.chunk_layout(fed.cfg)
        w1 = checkpoints(fed.state("coordinator"), layout.total)[1]
        ref = reference.result()
        [(flooding,)] = fed.query("SELECT flooding FROM keyholder_results WHERE round = 1")
        [(weight_sum,)] = fed.query("SELECT SUM(weight) FROM submissions WHERE round = 1")
        std = max(json.loads(str(flooding)).values()) / float(weight_sum)  # type: ignore[arg-type]
        err = float(np.abs(w1 - ref.final_flat).max())
        assert err <= 6 * std + 1e-12, (err, std)
        w0 = checkpoints(fed.state("coordinator"), layout.total)[0]
        assert float(np.abs(ref.final_flat - w0).max()) > 100 * std  # training moved it

        log = fed.procs["coordinator"].log_path.read_text()
        assert f"resumed at round {t} (open) with 2 accepted update(s)" in log

    stats = collect_round_stats(fed.state("coordinator"))
    assert [r["participants"] for r in stats] == [3 if r < t else 2 for r in range(1, ROUNDS + 1)]
    for r in stats:
        assert r["training_s"] > 0 and r["encryption_s"] > 0 and r["upload_s"] > 0
        assert r["aggregation_s"] > 0 and r["decryption_s"] > 0
        assert r["upload_bytes_per_participant"] > 4 * layout.total  # ciphertext expansion

    for site in ("site-00", "site-01"):
        state = DaemonState(fed.state(site) / "daemon.sqlite")
        statuses = {r.round: r.status for r in state.records()}
        state.close()
        assert statuses[t] is RoundStatus.SUBMITTED, (site, statuses)
