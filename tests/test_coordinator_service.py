"""The coordinator core in-process with real CKKS (a real secret key plays the key holder).

No network here: uploads are handed to :class:`coordinator.service.Coordinator` directly.
The gRPC path and the separate processes are covered by tests/test_reliability*.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import crypto
from coordinator.errors import (
    DuplicateSubmission,
    InvalidSubmission,
    NotPermitted,
    TooLarge,
    WrongRound,
)
from coordinator.keyholder_link import (
    DecryptJob,
    DecryptOutcome,
    KeyholderRefused,
    KeyholderUnavailable,
)
from coordinator.rounds import Action, Phase, RoundPolicy
from coordinator.service import Coordinator, FederationSpec, Upload
from crypto.secret import SecretContext

PARAMS = crypto.PRESETS["n4096"]
FED = "fed-test"
SITES = ("a", "b", "c")


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class SecretKeyDecryptor:
    """The key holder's decryption, in-process (its policy is tested in keyholder tests)."""

    def __init__(self, secret: SecretContext) -> None:
        self.secret = secret
        self.rounds: list[int] = []

    def public_context(self) -> bytes:
        return self.secret.public().to_bytes()

    def decrypt(self, job: DecryptJob) -> DecryptOutcome:
        if job.round in self.rounds:
            raise KeyholderRefused(f"round {job.round} already decrypted")
        self.rounds.append(job.round)
        agg = crypto.EncryptedAggregate.from_bytes(job.aggregate)
        sums = self.secret.decrypt_aggregate(agg, np.random.default_rng(job.round))
        stds = {c: self.secret.flood_std(n) for c, n in agg.normalizers.items()}
        return DecryptOutcome(sums, stds)


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


@pytest.fixture(scope="module")
def keys() -> dict[str, crypto.SigningKey]:
    return {s: crypto.SigningKey.from_seed(bytes([i + 1]) * 32) for i, s in enumerate(SITES)}


LAYOUT = crypto.ChunkLayout.from_shapes([("w", (5000,)), ("b", (7,))], PARAMS.values_per_ciphertext)


def make_spec(keys: dict[str, crypto.SigningKey], k: int = 2, rounds: int = 3) -> FederationSpec:
    return FederationSpec(
        federation_id=FED,
        policy=RoundPolicy(min_participants=k, deadline_s=30.0, rounds=rounds),
        layout=LAYOUT,
        initial_model=np.linspace(-1, 1, LAYOUT.total),
        roster={s: key.verify_key() for s, key in keys.items()},
        max_update_bytes=1 << 20,
    )


@pytest.fixture
def make(
    tmp_path: Path, secret: SecretContext, keys: dict[str, crypto.SigningKey]
) -> Iterator[object]:
    made: list[Coordinator] = []

    def build(k: int = 2, clock: Clock | None = None, dec: object | None = None) -> Coordinator:
        c = Coordinator(
            make_spec(keys, k),
            tmp_path / "state",
            secret.public(),
            dec or SecretKeyDecryptor(secret),  # type: ignore[arg-type]
            crypto.SigningKey.from_seed(b"\x09" * 32),
            clock=clock or Clock(),
        )
        for s in SITES:
            c.enrol(s, s, keys[s].verify_key().to_bytes())
        made.append(c)
        return c

    yield build
    for c in made:
        c.close()


def update(
    secret: SecretContext,
    keys: dict[str, crypto.SigningKey],
    site: str,
    round_no: int,
    vector: np.ndarray,
    weight: int = 3,
    *,
    signer: str | None = None,
    caller: str | None = None,
    ctx: crypto.PublicContext | None = None,
) -> Upload:
    enc = crypto.encrypt_update(ctx or secret.public(), LAYOUT, vector)
    env = crypto.UpdateEnvelope(
        federation_id=FED,
        round=round_no,
        site_id=site,
        chunk_ids=tuple(enc.chunks),
        digests=enc.digests(),
        weight=weight,
        layout_fingerprint=LAYOUT.fingerprint,
        params_fingerprint=PARAMS.fingerprint,
    )
    sig = crypto.sign_envelope(keys[signer or site], env)
    return Upload(caller or site, env, sig, dict(enc.chunks), {"train_s": 0.5})


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, LAYOUT.total)


def test_round_aggregates_to_the_weighted_average_up_to_flooding(make, secret, keys) -> None:  # type: ignore[no-untyped-def]
    coord = make()
    w0 = coord.global_model()
    deltas = {s: vec(i) for i, s in enumerate(SITES)}
    weights = {"a": 2, "b": 3, "c": 5}
    receipts = [coord.submit(update(secret, keys, s, 1, deltas[s], weights[s])) for s in SITES]
    fields = receipts[0].fields
    crypto.verify_message(
        crypto.SigningKey.from_seed(b"\x09" * 32).verify_key(),
        "cipherfed/receipt/v1",
        fields.canonical_bytes(),
        receipts[0].signature,
    )
    assert coord.tick() is Action.CLOSE  # everyone sent: closes before the deadline
    assert coord.state.round == 2 and coord.state.phase is Phase.OPEN
    expected = w0 + sum(weights[s] * deltas[s] for s in SITES) / sum(weights.values())
    err = np.abs(coord.global_model() - expected).max()
    std = secret.flood_std(10) / 10
    assert err < 8 * std + 1e-9, (err, std)
    assert err > 0  # flooding noise was added
    [row] = coord.store.round_stats()
    assert row["participants"] == 3 and row["outcome"] == "applied"
    assert {"aggregation_s", "decryption_s"} <= set(row["stats"])


def test_bad_inputs_are_refused_with_the_right_error_and_nothing_is_lost(
    make, secret, keys
) -> None:  # type: ignore[no-untyped-def]
    coord = make()
    good = update(secret, keys, "a", 1, vec(1))
    coord.submit(good)
    with pytest.raises(DuplicateSubmission):
        coord.submit(update(secret, keys, "a", 1, vec(2)))
    with pytest.raises(InvalidSubmission, match="signature"):
        coord.submit(update(secret, keys, "b", 1, vec(2), signer="c"))
    with pytest.raises(NotPermitted, match="certificate is 'c'"):
        coord.submit(update(secret, keys, "b", 1, vec(2), caller="c"))
    with pytest.raises(NotPermitted, match="not a site"):
        coord.submit(update(secret, keys, "b", 1, vec(2), caller="mallory"))
    garbage = update(secret, keys, "b", 1, vec(2))
    blob = b"\x00" * len(garbage.chunks[0])
    digests = {**garbage.envelope.digests, 0: hashlib.sha256(blob).hexdigest()}
    env = dataclasses.replace(garbage.envelope, digests=digests)
    bad = Upload(
        "b", env, crypto.sign_envelope(keys["b"], env), {0: blob, 1: garbage.chunks[1]}, {}
    )
    with pytest.raises(InvalidSubmission, match="not a valid ciphertext"):
        coord.submit(bad)
    tampered = Upload(
        "b", garbage.envelope, garbage.signature, {0: garbage.chunks[1], 1: garbage.chunks[1]}, {}
    )
    with pytest.raises(InvalidSubmission, match="does not match its signed digest"):
        coord.submit(tampered)
    other_params = update(secret, keys, "b", 1, vec(2))
    env = dataclasses.replace(other_params.envelope, params_fingerprint="ab" * 32)
    with pytest.raises(InvalidSubmission, match="parameter fingerprint"):
        coord.submit(
            Upload("b", env, crypto.sign_envelope(keys["b"], env), other_params.chunks, {})
        )
    with pytest.raises(InvalidSubmission, match="weight 100000 outside"):
        coord.submit(update(secret, keys, "b", 1, vec(2), weight=100_000))
    with pytest.raises(WrongRound, match="round 2 is not open"):
        coord.submit(update(secret, keys, "b", 2, vec(2)))
    with pytest.raises(TooLarge, match="exceeds the limit"):
        coord.check_upload_header("b", garbage.envelope, (1 << 20) + 1)
    # nothing stored was lost: a's update is still there, and b can still submit
    assert set(coord.state.accepted) == {"a"}
    coord.submit(update(secret, keys, "b", 1, vec(2)))
    assert [s.site_id for s in coord.store.submissions(1)] == ["a", "b"]
    # a replay of round 1 once round 2 is open
    coord.submit(update(secret, keys, "c", 1, vec(3)))
    coord.tick()
    with pytest.raises(WrongRound, match="round 1 is not open"):
        coord.submit(good)


def test_fewer_than_k_at_deadline_retries_keeping_updates(make, secret, keys) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    coord = make(k=2, clock=clock)
    coord.submit(update(secret, keys, "a", 1, vec(1)))
    clock.now += 31
    assert coord.tick() is Action.RETRY
    assert coord.state.attempt == 2 and set(coord.state.accepted) == {"a"}
    coord.submit(update(secret, keys, "b", 1, vec(2)))
    assert coord.tick() is Action.WAIT
    clock.now += 31
    assert coord.tick() is Action.CLOSE
    assert coord.state.round == 2
    assert coord.store.round_stats()[0]["participants"] == 2


def test_restart_mid_round_keeps_every_accepted_update(make, secret, keys) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    dec = SecretKeyDecryptor(secret)
    first = make(clock=clock, dec=dec)
    first.submit(update(secret, keys, "a", 1, vec(1)))
    first.submit(update(secret, keys, "b", 1, vec(2)))
    first.store.close()  # the process dies (no graceful shutdown)
    again = make(clock=clock, dec=dec)
    assert set(again.state.accepted) == {"a", "b"} and again.state.phase is Phase.OPEN
    with pytest.raises(DuplicateSubmission):
        again.submit(update(secret, keys, "a", 1, vec(9)))
    again.submit(update(secret, keys, "c", 1, vec(3)))
    assert again.tick() is Action.CLOSE and again.state.round == 2
    # a restart after the decryption was stored re-applies it without a second decryption
    again.store.close()
    third = make(clock=clock, dec=dec)
    assert third.state.round == 2 and dec.rounds == [1]


def test_coordinator_never_imports_or_holds_a_secret_key(secret) -> None:  # type: ignore[no-untyped-def]
    """The coordinator's code never loads crypto.secret; its context cannot decrypt."""
    import subprocess
    import sys

    code = (
        "import sys, cipherfed.commands.coordinator, coordinator.service, coordinator.servicer;"
        "bad = [m for m in sys.modules if m == 'crypto.secret' or m.startswith('keyholder')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    ctx = crypto.PublicContext.from_bytes(secret.public().to_bytes())
    assert not ctx.is_private()
    assert not any("decrypt" in name for name in dir(ctx))
    with pytest.raises(crypto.InvalidUpdate):
        SecretContext.import_secret_key_encrypted(ctx.to_bytes(), b"0123456789abcdef")


class FlakyDecryptor(SecretKeyDecryptor):
    def __init__(self, secret: SecretContext, failures: int) -> None:
        super().__init__(secret)
        self.failures = failures

    def decrypt(self, job: DecryptJob) -> DecryptOutcome:
        if self.failures:
            self.failures -= 1
            raise KeyholderUnavailable("connection refused")
        return super().decrypt(job)


def test_key_holder_down_keeps_the_round_aggregating_then_completes(make, secret, keys) -> None:  # type: ignore[no-untyped-def]
    coord = make(dec=FlakyDecryptor(secret, failures=1))
    for s in SITES:
        coord.submit(update(secret, keys, s, 1, vec(ord(s))))
    coord.tick()
    assert coord.state.round == 1 and coord.state.phase is Phase.AGGREGATING
    assert coord.tick() is Action.WAIT  # not retried at once
    coord._retry_at = 0.0
    assert coord.tick() is Action.CLOSE and coord.state.round == 2


def test_key_holder_refusal_keeps_the_model(make, secret, keys) -> None:  # type: ignore[no-untyped-def]
    dec = SecretKeyDecryptor(secret)
    dec.rounds.append(1)  # as if round 1 had been decrypted before (lost answer)
    coord = make(dec=dec)
    w0 = coord.global_model()
    for s in SITES:
        coord.submit(update(secret, keys, s, 1, vec(ord(s))))
    coord.tick()
    assert coord.state.round == 2
    assert np.array_equal(coord.global_model(), w0)
    assert coord.store.round_stats()[0]["outcome"].startswith("refused")
