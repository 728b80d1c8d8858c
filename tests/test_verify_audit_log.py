"""scripts/verify_audit_log.py on a small real run built in-process.

The run folder is made by the real classes: ``Roster`` (roster.json), the coordinator core
(:class:`coordinator.service.Coordinator` with its SQLite store, blob store and
hash-chained log) and the key holder's engine (:class:`keyholder.engine.KeyHolder` with
its policy, store and log), joined by an in-process link that builds and signs the
decrypt request exactly as the gRPC client does. Real CKKS throughout; no network.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import crypto
from cipherfed.provisioning import Roster, RosterEntry
from coordinator.keyholder_link import DecryptJob, DecryptOutcome
from coordinator.rounds import RoundPolicy
from coordinator.service import Coordinator, FederationSpec, Upload
from crypto.auditlog import HashChainLog
from crypto.secret import SecretContext
from keyholder.engine import KeyHolder
from keyholder.policy import PolicyConfig, Trust
from keyholder.store import DecryptionStore
from proto import wire
from scripts.verify_audit_log import RunLayoutError, locate, verify_run

ROOT = Path(__file__).resolve().parents[1]
PARAMS = crypto.PRESETS["n4096"]
FED = "fed-audit"
SITES = ("site-a", "site-b", "site-c")
LAYOUT = crypto.ChunkLayout.from_shapes([("w", (5000,)), ("b", (9,))], PARAMS.values_per_ciphertext)
ROUNDS = 2


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class InProcessKeyholder:
    """The coordinator's key-holder link without gRPC (same request, same signature).

    ``substitute=True`` plays a dishonest coordinator: instead of the aggregate it asks to
    decrypt the first site's update scaled by the total weight (the normalizers still
    match the signed weights, so the key holder's policy cannot tell).
    """

    def __init__(
        self,
        engine: KeyHolder,
        key: crypto.SigningKey,
        ctx: crypto.PublicContext,
        substitute: bool = False,
    ) -> None:
        self.engine = engine
        self.key = key
        self.ctx = ctx
        self.substitute = substitute
        self.first_update: dict[int, crypto.EncryptedUpdate] = {}

    def public_context(self) -> bytes:
        return self.ctx.to_bytes()

    def decrypt(self, job: DecryptJob) -> DecryptOutcome:
        aggregate = job.aggregate
        if self.substitute:
            total = sum(job.normalizers.values()) // len(job.normalizers)
            fake = crypto.weighted_sum(self.ctx, [self.first_update[job.round]], [total])
            aggregate = fake.to_bytes()
        req = wire.DecryptRequest(
            federation_id=FED,
            round=job.round,
            normalizers=dict(job.normalizers),
            envelopes=tuple(job.envelopes),
            params_fingerprint=PARAMS.fingerprint,
            layout_fingerprint=LAYOUT.fingerprint,
            aggregate=aggregate,
        )
        req = req.with_signature(
            crypto.sign_message(self.key, wire.DECRYPT_REQUEST_DOMAIN, req.digest())
        )
        res = self.engine.decrypt(req, peer="coordinator")
        return DecryptOutcome(sums=dict(res.sums), flooding_std=dict(res.flooding_std))


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


def build_run(root: Path, secret: SecretContext, *, substitute: bool = False) -> Path:
    """A finished 2-round federation of three sites under ``root`` (the federation root)."""
    site_keys = {s: crypto.SigningKey.from_seed(bytes([i + 1]) * 32) for i, s in enumerate(SITES)}
    coord_key = crypto.SigningKey.from_seed(b"\x21" * 32)
    kh_key = crypto.SigningKey.from_seed(b"\x22" * 32)
    roster = Roster(
        federation_id=FED,
        ca_fingerprint="0" * 64,
        coordinator=RosterEntry(coord_key.verify_key().to_bytes(), "1" * 64),
        keyholder=RosterEntry(kh_key.verify_key().to_bytes(), "2" * 64),
        sites={s: RosterEntry(k.verify_key().to_bytes(), "3" * 64) for s, k in site_keys.items()},
    )
    kit = root / "kits" / "coordinator"
    kit.mkdir(parents=True)
    (kit / "roster.json").write_text(roster.to_json())
    kh_state = root / "state" / "keyholder"
    coord_state = root / "state" / "coordinator"
    kh_state.mkdir(parents=True)
    coord_state.mkdir(parents=True)
    public = secret.public()
    (coord_state / "public_context.bin").write_bytes(public.to_bytes())
    engine = KeyHolder(
        secret,
        PolicyConfig(FED, min_participants=2, params_fingerprint=PARAMS.fingerprint),
        Trust(coord_key.verify_key(), {s: k.verify_key() for s, k in site_keys.items()}),
        DecryptionStore(kh_state / "keyholder.sqlite", FED, PARAMS.fingerprint),
        HashChainLog(kh_state / "audit.jsonl", kh_key),
        kh_key,
        rng_factory=lambda: np.random.default_rng(5),
    )
    link = InProcessKeyholder(engine, coord_key, public, substitute)
    coord_log = HashChainLog(coord_state / "audit.log", coord_key)
    spec = FederationSpec(
        federation_id=FED,
        policy=RoundPolicy(min_participants=2, deadline_s=30.0, rounds=ROUNDS),
        layout=LAYOUT,
        initial_model=np.zeros(LAYOUT.total),
        roster={s: k.verify_key() for s, k in site_keys.items()},
        max_update_bytes=1 << 21,
    )
    coord = Coordinator(
        spec, coord_state, public, link, coord_key, audit=coord_log.append, clock=Clock()
    )
    try:
        for s in SITES:
            coord.enrol(s, s, site_keys[s].verify_key().to_bytes())
        rng = np.random.default_rng(0)
        for rnd in range(1, ROUNDS + 1):
            for i, s in enumerate(SITES):
                enc = crypto.encrypt_update(public, LAYOUT, rng.uniform(-0.01, 0.01, LAYOUT.total))
                if i == 0:
                    link.first_update[rnd] = enc
                env = crypto.UpdateEnvelope(
                    federation_id=FED,
                    round=rnd,
                    site_id=s,
                    chunk_ids=tuple(enc.chunks),
                    digests=enc.digests(),
                    weight=3 + i,
                    layout_fingerprint=LAYOUT.fingerprint,
                    params_fingerprint=PARAMS.fingerprint,
                )
                sig = crypto.sign_envelope(site_keys[s], env)
                coord.submit(Upload(s, env, sig, dict(enc.chunks), {}))
            coord.tick()
        assert coord.finished
    finally:
        coord.close()
    return root


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, secret: SecretContext) -> Path:
    return build_run(tmp_path_factory.mktemp("run") / "federation", secret)


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "federation"
    shutil.copytree(run, dst)
    return dst


def _failed(result: dict[str, object]) -> list[str]:
    return [f"{f['check']}: {f['detail']}" for f in result["failures"]]  # type: ignore[attr-defined]


def test_clean_run_verifies(clean_run: Path) -> None:
    result = verify_run(locate(clean_run))
    assert result["ok"], _failed(result)
    assert result["rounds_verified"] == [1, 2]
    names = [c["check"] for c in result["checks"]]  # type: ignore[attr-defined]
    assert "round 2: key holder decrypted the recomputed aggregate" in names


def test_demo_layout_is_found(clean_run: Path) -> None:
    # a demo output folder holds the federation root under federation/
    assert locate(clean_run.parent).root == clean_run


def test_changed_blob_byte_is_detected(clean_run: Path, tmp_path: Path) -> None:
    run = _copy(clean_run, tmp_path)
    db = sqlite3.connect(run / "state/coordinator/coordinator.sqlite")
    (chunks,) = db.execute("SELECT chunks FROM submissions WHERE round = 2 LIMIT 1").fetchone()
    db.close()
    digest = next(iter(json.loads(chunks).values()))  # a stored ciphertext chunk
    target = run / "state/coordinator/blobs" / digest[:2] / digest
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify_run(locate(run))
    assert not result["ok"]
    assert any("altered on disk" in f for f in _failed(result)), _failed(result)


@pytest.mark.parametrize("which", ["coordinator", "keyholder"])
def test_changed_log_line_is_detected(clean_run: Path, tmp_path: Path, which: str) -> None:
    run = _copy(clean_run, tmp_path)
    log = run / "state" / which / ("audit.log" if which == "coordinator" else "audit.jsonl")
    lines = log.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["time"] = entry["time"].replace("20", "21", 1)  # one changed character
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    log.write_bytes(b"".join(lines))
    result = verify_run(locate(run))
    assert not result["ok"]
    assert any("line 2" in f and "log chain" in f for f in _failed(result)), _failed(result)


def test_changed_stored_weight_is_detected(clean_run: Path, tmp_path: Path) -> None:
    run = _copy(clean_run, tmp_path)
    db = sqlite3.connect(run / "state/coordinator/coordinator.sqlite")
    with db:
        db.execute(
            "UPDATE submissions SET weight = weight + 1 WHERE round = 1 AND site_id = ?",
            (SITES[1],),
        )
    db.close()
    failed = _failed(verify_run(locate(run)))
    assert any("stored weight 5 != signed weight 4" in f for f in failed), failed


def test_substituted_aggregate_is_detected(tmp_path: Path, secret: SecretContext) -> None:
    run = build_run(tmp_path / "federation", secret, substitute=True)
    result = verify_run(locate(run))
    assert not result["ok"]
    failed = _failed(result)
    assert any("decrypted the recomputed aggregate" in f for f in failed), failed
    # the logs themselves are intact: only the recomputation reveals the substitution
    assert all("log chain" not in f for f in failed)


def test_cli_exit_codes(clean_run: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "scripts" / "verify_audit_log.py")
    ok = subprocess.run(
        [sys.executable, script, "--run", str(clean_run), "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    missing = subprocess.run(
        [sys.executable, script, "--run", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "missing" in missing.stderr


def test_locate_refuses_a_folder_without_roster(clean_run: Path, tmp_path: Path) -> None:
    run = _copy(clean_run, tmp_path)
    shutil.rmtree(run / "kits")
    with pytest.raises(RunLayoutError, match="roster"):
        locate(run)
