"""The site daemon against an in-process coordinator over real gRPC with mutual TLS.

The coordinator core runs in this process with a real CKKS secret key in place of the key
holder process (that one is exercised by tests/test_reliability_*.py). The daemons train
for real on their ACTG 175 partitions.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import crypto
from cipherfed import site_setup
from cipherfed.commands.participant import privacy_step
from cipherfed.config import DPSGDSection, FederationConfig, PrivacyConfig
from cipherfed.provisioning import ProvisionResult, provision
from coordinator.metrics import CoordinatorMetrics
from coordinator.rounds import RoundPolicy
from coordinator.service import Coordinator, FederationSpec
from coordinator.servicer import CoordinatorServicer
from crypto.secret import SecretContext
from participant.client import Backoff, CoordinatorClient, GaveUp
from participant.daemon import ParticipantDaemon, SiteIdentity
from participant.state import DaemonState, RoundStatus
from participant.training import LocalTrainer
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto import transport
from tests.e2e_helpers import small_config
from tests.test_coordinator_service import SecretKeyDecryptor


@dataclasses.dataclass
class Server:
    cfg: FederationConfig
    kits: ProvisionResult
    core: Coordinator
    address: str
    metrics_port: int


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    cfg = small_config(2, k=2, rounds=2, deadline_s=600)
    kits = provision(cfg, tmp_path / "kits")
    secret = SecretContext.generate(site_setup.ckks_params(cfg))
    roster = kits.roster
    spec = FederationSpec(
        federation_id=cfg.federation.id,
        policy=RoundPolicy(2, 600.0, 2),
        layout=site_setup.chunk_layout(cfg),
        initial_model=site_setup.initial_model(cfg),
        roster={s: crypto.VerifyKey.from_bytes(e.verify_key) for s, e in roster.sites.items()},
        max_update_bytes=cfg.federation.max_update_bytes,
        cert_fingerprints={s: e.cert_fingerprint for s, e in roster.sites.items()},
    )
    key = crypto.SigningKey.from_pem((kits.coordinator_kit / "signing_key.pem").read_bytes())
    metrics = CoordinatorMetrics()
    core = Coordinator(
        spec,
        tmp_path / "coord",
        secret.public(),
        SecretKeyDecryptor(secret),
        key,
        metrics=metrics,
    )
    identity = transport.TlsIdentity.from_kit(kits.coordinator_kit)
    grpc_server, port, _health = transport.create_server("127.0.0.1:0", identity)
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(core, secret.public().to_bytes()), grpc_server
    )
    grpc_server.start()
    http, mport = metrics.serve(0)
    ticker = threading.Thread(target=core.run_ticks, args=(0.05,), daemon=True)
    ticker.start()
    yield Server(cfg, kits, core, f"127.0.0.1:{port}", mport)
    core.stop()
    ticker.join(5)
    grpc_server.stop(0).wait()
    http.shutdown()
    core.close()


def make_daemon(
    srv: Server, site: str, state_dir: Path, cfg: FederationConfig | None = None
) -> tuple[ParticipantDaemon, DaemonState, CoordinatorClient]:
    cfg = cfg or srv.cfg
    kit = srv.kits.site_kits[site]
    data = site_setup.site_data(cfg, site)
    trainer = LocalTrainer(
        site_setup.model_factory(cfg),
        data.dataset,
        site_setup.train_config(cfg),
        seed=site_setup.trainer_seed(cfg, data.index),
    )
    client = CoordinatorClient(
        srv.address, transport.TlsIdentity.from_kit(kit), server_name="coordinator"
    )
    state = DaemonState(state_dir / "daemon.sqlite")
    layout = site_setup.chunk_layout(cfg)
    identity = SiteIdentity(
        cfg.federation.id,
        site,
        crypto.SigningKey.from_pem((kit / "signing_key.pem").read_bytes()),
        site_setup.ckks_params(cfg).fingerprint,
        crypto.VerifyKey.from_bytes(srv.kits.roster.coordinator.verify_key),
    )
    daemon = ParticipantDaemon(
        identity,
        client,
        state,
        trainer,
        layout,
        privacy=privacy_step(cfg, state_dir, layout, site, 0),
        poll_s=0.05,
    )
    return daemon, state, client


def test_daemons_run_a_federation_and_never_submit_twice_after_restart(
    server: Server, tmp_path: Path
) -> None:
    a, a_state, a_client = make_daemon(server, "site-00", tmp_path / "a")
    a.enrol()
    ann = a_client.get_round(server.cfg.federation.id, "site-00")
    assert ann.state == pb.ROUND_STATE_OPEN and ann.round == 1
    # prepared but "crashed" before the upload: the signed update is on disk
    prepared = a._prepare(1, ann)
    assert prepared is not None and a_state.prepared(1) == prepared
    a_state.close()
    a_client.close()

    # restart: the stored bytes are sent, nothing is trained again
    a2, a2_state, a2_client = make_daemon(server, "site-00", tmp_path / "a")
    a2.trainer = None  # type: ignore[assignment]  # training again would fail loudly
    a2.enrol()
    assert a2.step(a2_client.get_round(server.cfg.federation.id, "site-00"))
    rec = a2_state.record(1)
    assert rec is not None and rec.status is RoundStatus.SUBMITTED and rec.receipt
    [sub] = server.core.store.submissions(1)
    assert sub.envelope == prepared.envelope and sub.signature == prepared.signature
    # asked again for the same round: nothing is sent
    assert not a2.step(a2_client.get_round(server.cfg.federation.id, "site-00"))
    a2_state.close()
    a2_client.close()

    # both daemons run the federation to the end
    a3, a3_state, a3_client = make_daemon(server, "site-00", tmp_path / "a")
    b, b_state, b_client = make_daemon(server, "site-01", tmp_path / "b")
    threads = [threading.Thread(target=d.run) for d in (a3, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert server.core.finished
    assert [s.site_id for s in server.core.store.submissions(2)] == ["site-00", "site-01"]
    assert [r.status for r in b_state.records()] == [RoundStatus.SUBMITTED] * 2
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read()
    assert b"cipherfed_rounds_completed_total 2.0" in text
    for st, cl in ((a3_state, a3_client), (b_state, b_client)):
        st.close()
        cl.close()


def test_over_budget_site_sends_nothing_and_ledger_survives(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = dataclasses.replace(
        server.cfg,
        privacy=PrivacyConfig(
            mechanism="svt",
            sharing_fraction=0.1,
            gamma=0.01,
            epsilon=5.0,
            budget_epsilon=7.0,
            threshold=0.0,
        ),
    )
    d, state, client = make_daemon(server, "site-00", tmp_path / "s", cfg)
    d.enrol()
    ann = client.get_round(cfg.federation.id, "site-00")
    assert d.step(ann)  # round 1 costs eps 5 <= 7
    state.close()
    client.close()
    log = [r for r in caplog.records if "beyond the CKKS bound" in r.getMessage()]
    assert log  # the SVT release noise at eps=5 is far beyond the CKKS range: clipped
    # round 2 would take the site to eps 10 > 7: refused before training, nothing sent
    d2, state2, client2 = make_daemon(server, "site-00", tmp_path / "s", cfg)
    fake = pb.RoundAnnouncement(round=2, state=pb.ROUND_STATE_OPEN)
    d2.enrol()
    assert not d2.step(fake)
    rec = state2.record(2)
    assert rec is not None and rec.status is RoundStatus.SKIPPED and "budget" in rec.reason
    assert [s.site_id for s in server.core.store.submissions(1)] == ["site-00"]
    state2.close()
    client2.close()


def test_client_backs_off_with_jitter_then_gives_up(tmp_path: Path) -> None:
    cfg = small_config(1)
    kits = provision(cfg, tmp_path / "kits")
    delays: list[float] = []
    client = CoordinatorClient(
        cfg.network.coordinator,  # nothing listens there
        transport.TlsIdentity.from_kit(kits.site_kits["site-00"]),
        server_name="coordinator",
        backoff=Backoff(base_s=0.01, cap_s=0.04, max_attempts=5),
        rng=random.Random(0),
        sleep=delays.append,
        timeout_s=2.0,
    )
    with pytest.raises(GaveUp, match="after 5 tries"):
        client.get_round(cfg.federation.id, "site-00")
    client.close()
    assert len(delays) == 4
    assert all(0 <= d <= min(0.04, 0.01 * 2**i) for i, d in enumerate(delays))
    assert len(set(delays)) == 4  # jittered
    assert np.isfinite(delays).all()


def test_unknown_status_is_not_retried(server: Server) -> None:
    client = CoordinatorClient(
        server.address,
        transport.TlsIdentity.from_kit(server.kits.site_kits["site-01"]),
        server_name="coordinator",
    )
    from participant.client import CoordinatorRefused

    with pytest.raises(CoordinatorRefused) as info:
        client.enrol(server.cfg.federation.id, "site-00", b"\x00" * 32)
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    client.close()


def test_federation_file_maps_to_the_simulation_and_trainer_settings() -> None:
    cfg = small_config(3, rounds=7)
    sim = site_setup.simulation_config(cfg)
    assert (sim.n_sites, sim.rounds, sim.seed, sim.train.lr) == (3, 7, 0, 1e-3)
    assert sim.train.dp_sgd is None
    with_dp = dataclasses.replace(
        cfg,
        privacy=PrivacyConfig(dp_sgd=DPSGDSection(target_epsilon=3.0, target_delta=1e-5)),
    )
    dp = site_setup.train_config(with_dp).dp_sgd
    assert dp is not None and (dp.target_epsilon, dp.planned_rounds) == (3.0, 7)
    layout = site_setup.chunk_layout(cfg)
    assert layout.total == site_setup.initial_model(cfg).size and layout.n_chunks == 1
    parts = [site_setup.site_data(cfg, s) for s in cfg.site_ids]
    assert [p.index for p in parts] == [0, 1, 2]
    assert sum(len(p.dataset) for p in parts) + len(site_setup.validation_set(cfg)) == 2139
    with pytest.raises(KeyError, match="not in federation"):
        site_setup.site_data(cfg, "site-99")
