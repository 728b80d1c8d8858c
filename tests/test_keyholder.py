"""Key holder: pure policy, engine (decrypt + persist + log), and the real mTLS service."""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from cipherfed.commands import keyholder as keyholder_cmd
from cipherfed.config import loads_config
from cipherfed.provisioning import ProvisionResult, provision
from crypto import (
    PRESETS,
    ChunkLayout,
    EncryptedUpdate,
    PublicContext,
    SigningKey,
    UpdateEnvelope,
    VerifyKey,
    encrypt_update,
    sign_envelope,
    sign_message,
    verify_message,
    weighted_sum,
)
from crypto.auditlog import HashChainLog, read_log, verify_log
from crypto.secret import SecretContext
from keyholder.engine import KeyHolder
from keyholder.keystore import KeyStoreError, load_or_create_secret
from keyholder.policy import PolicyConfig, PolicyRefusal, Trust, evaluate
from keyholder.store import DecryptionStore, StoreError
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto.clients import KeyHolderClient
from proto.streams import assemble_blob
from proto.transport import TlsIdentity, check_health, create_channel
from proto.wire import (
    DECRYPT_REQUEST_DOMAIN,
    DECRYPT_RESULT_DOMAIN,
    DecryptRequest,
    DecryptResult,
    SignedEnvelope,
)

PARAMS = PRESETS["n4096"]
FED = """
[federation]
id = "kh-test"
min_participants = 2
rounds = 5
weighting = "iterations"
[network]
coordinator = "127.0.0.1:0"
keyholder = "127.0.0.1:0"
[[sites]]
id = "site-a"
data = "actg175:0"
[[sites]]
id = "site-b"
data = "actg175:1"
[[sites]]
id = "site-c"
data = "actg175:2"
[crypto]
preset = "n4096"
"""
N_VALUES = 6000  # two chunks of 4096 values
WEIGHTS = {"site-a": 3, "site-b": 5, "site-c": 2}


@dataclass
class Update:
    site: str
    vector: np.ndarray
    enc: EncryptedUpdate
    signed: SignedEnvelope
    weight: int


@dataclass
class World:
    kits: ProvisionResult
    secret: SecretContext
    public: PublicContext
    layout: ChunkLayout
    site_keys: dict[str, SigningKey]
    coordinator_key: SigningKey
    keyholder_verify: VerifyKey

    def trust(self) -> Trust:
        return Trust(
            coordinator=self.coordinator_key.verify_key(),
            sites={s: k.verify_key() for s, k in self.site_keys.items()},
        )

    def policy(self, **kw: object) -> PolicyConfig:
        base = PolicyConfig(
            federation_id="kh-test", min_participants=2, params_fingerprint=PARAMS.fingerprint
        )
        return replace(base, **kw)  # type: ignore[arg-type]

    def update(
        self,
        site: str,
        round_: int,
        seed: int,
        chunk_ids: Sequence[int] | None = None,
        *,
        signer: str | None = None,
        federation_id: str = "kh-test",
    ) -> Update:
        vector = np.random.default_rng(seed).uniform(-0.5, 0.5, N_VALUES)
        if chunk_ids is not None:
            mask = np.zeros(N_VALUES, dtype=bool)
            for c in chunk_ids:
                mask[self.layout.chunk_slice(c)] = True
            vector = np.where(mask, vector, 0.0)
        enc = encrypt_update(self.public, self.layout, vector)
        env = UpdateEnvelope(
            federation_id=federation_id,
            round=round_,
            site_id=site,
            chunk_ids=enc.chunk_ids,
            digests=enc.digests(),
            weight=WEIGHTS[site],
            layout_fingerprint=self.layout.fingerprint,
            params_fingerprint=PARAMS.fingerprint,
        )
        sig = sign_envelope(self.site_keys[signer or site], env)
        return Update(site, vector, enc, SignedEnvelope(env.canonical_bytes(), sig), WEIGHTS[site])

    def request(
        self,
        round_: int,
        updates: Sequence[Update],
        *,
        weights: Sequence[int] | None = None,
        signer: SigningKey | None = None,
        envelopes: Sequence[SignedEnvelope] | None = None,
    ) -> DecryptRequest:
        agg = weighted_sum(
            self.public, [u.enc for u in updates], list(weights or [u.weight for u in updates])
        )
        req = DecryptRequest(
            federation_id="kh-test",
            round=round_,
            normalizers=dict(agg.normalizers),
            envelopes=tuple(envelopes if envelopes is not None else [u.signed for u in updates]),
            params_fingerprint=PARAMS.fingerprint,
            layout_fingerprint=self.layout.fingerprint,
            aggregate=agg.to_bytes(),
        )
        sig = sign_message(signer or self.coordinator_key, DECRYPT_REQUEST_DOMAIN, req.digest())
        return req.with_signature(sig)


def _key(kit: Path) -> SigningKey:
    return SigningKey.from_pem((kit / "signing_key.pem").read_bytes())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    kits = provision(loads_config(FED), tmp_path_factory.mktemp("kh") / "fed")
    secret = SecretContext.generate(PARAMS)
    layout = ChunkLayout.from_shapes([("w", (N_VALUES,))], PARAMS.values_per_ciphertext)
    assert layout.n_chunks == 2
    return World(
        kits=kits,
        secret=secret,
        public=secret.public(),
        layout=layout,
        site_keys={s: _key(k) for s, k in kits.site_kits.items()},
        coordinator_key=_key(kits.coordinator_kit),
        keyholder_verify=VerifyKey.from_bytes(kits.roster.keyholder.verify_key),
    )


def _refusal(code: str, fn: object, *args: object) -> PolicyRefusal:
    with pytest.raises(PolicyRefusal) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.code == code, info.value.reason
    return info.value


# ---------------------------------------------------------------------------- pure policy


def test_policy_grants_valid_request(world: World) -> None:
    ups = [world.update("site-a", 1, 1), world.update("site-b", 1, 2)]
    req = world.request(1, ups)
    approval = evaluate(req, world.policy(), world.trust(), {})
    assert approval.sites == ("site-a", "site-b")
    assert approval.released_chunks == (0, 1) and approval.withheld_chunks == ()
    assert approval.request_digest == req.digest().hex() and not approval.retry


def test_policy_refuses_fewer_than_k(world: World) -> None:
    ups = [world.update("site-a", 1, 1)]
    r = _refusal(
        "PERMISSION_DENIED", evaluate, world.request(1, ups), world.policy(), world.trust(), {}
    )
    assert "only 1 valid participant signature" in r.reason and "K=2" in r.reason
    # Two envelopes from one site do not count twice.
    a = world.update("site-a", 1, 1)
    req = world.request(1, [a, a])
    _refusal("INVALID_ARGUMENT", evaluate, req, world.policy(), world.trust(), {})


def test_policy_refuses_request_not_signed_by_coordinator(world: World) -> None:
    ups = [world.update("site-a", 1, 1), world.update("site-b", 1, 2)]
    forged = world.request(1, ups, signer=world.site_keys["site-a"])
    r = _refusal("PERMISSION_DENIED", evaluate, forged, world.policy(), world.trust(), {})
    assert "not signed by the coordinator" in r.reason
    # Changing a field after signing breaks the signature too.
    good = world.request(1, ups)
    tampered = replace(good, normalizers={c: n + 1 for c, n in good.normalizers.items()})
    _refusal("PERMISSION_DENIED", evaluate, tampered, world.policy(), world.trust(), {})
    unsigned = replace(good, coordinator_signature=b"")
    _refusal("PERMISSION_DENIED", evaluate, unsigned, world.policy(), world.trust(), {})


def test_policy_refuses_second_decryption_but_recognises_retry(world: World) -> None:
    ups = [world.update("site-a", 2, 1), world.update("site-b", 2, 2)]
    req = world.request(2, ups)
    done = {2: "ab" * 32}
    r = _refusal("FAILED_PRECONDITION", evaluate, req, world.policy(), world.trust(), done)
    assert "already decrypted" in r.reason
    retry = evaluate(req, world.policy(), world.trust(), {2: req.digest().hex()})
    assert retry.retry


def test_policy_refuses_bad_envelopes(world: World) -> None:
    a, b = world.update("site-a", 3, 1), world.update("site-b", 3, 2)
    policy, trust = world.policy(), world.trust()
    # A site that is not enrolled.
    few = Trust(trust.coordinator, {"site-a": trust.sites["site-a"]})
    r = _refusal("PERMISSION_DENIED", evaluate, world.request(3, [a, b]), policy, few, {})
    assert "'site-b' is not enrolled" in r.reason
    # An envelope signed by another site's key.
    forged_b = world.update("site-b", 3, 2, signer="site-a")
    r = _refusal("PERMISSION_DENIED", evaluate, world.request(3, [a, forged_b]), policy, trust, {})
    assert "signature of site 'site-b'" in r.reason
    # An envelope from another round (replayed evidence).
    old_b = world.update("site-b", 2, 2)
    r = _refusal("PERMISSION_DENIED", evaluate, world.request(3, [a, old_b]), policy, trust, {})
    assert "round 2" in r.reason
    # Another federation's envelope.
    other = world.update("site-b", 3, 2, federation_id="elsewhere")
    _refusal("PERMISSION_DENIED", evaluate, world.request(3, [a, other]), policy, trust, {})
    # Garbage instead of an envelope.
    junk = SignedEnvelope(b"\x00garbage", b"\x01" * 64)
    req = world.request(3, [a, b], envelopes=[a.signed, junk])
    r = _refusal("INVALID_ARGUMENT", evaluate, req, policy, trust, {})
    assert "malformed" in r.reason


def test_policy_checks_normalizers_fingerprints_and_federation(world: World) -> None:
    a, b = world.update("site-a", 4, 1), world.update("site-b", 4, 2)
    policy, trust = world.policy(), world.trust()
    # The coordinator weighted with other weights than the signed ones.
    r = _refusal(
        "INVALID_ARGUMENT", evaluate, world.request(4, [a, b], weights=[1, 1]), policy, trust, {}
    )
    assert "normalizer" in r.reason
    uniform = world.policy(weighting="uniform")
    assert evaluate(world.request(4, [a, b], weights=[1, 1]), uniform, trust, {}).sites
    # Other CKKS parameters, another federation, a garbage aggregate.
    req = world.request(4, [a, b])
    _refusal(
        "INVALID_ARGUMENT", evaluate, req, world.policy(params_fingerprint="0" * 64), trust, {}
    )
    _refusal("PERMISSION_DENIED", evaluate, req, world.policy(federation_id="other"), trust, {})
    garbage = replace(req, aggregate=b"CFag" + b"\x00" * 40)
    signed = garbage.with_signature(
        sign_message(world.coordinator_key, DECRYPT_REQUEST_DOMAIN, garbage.digest())
    )
    r = _refusal("INVALID_ARGUMENT", evaluate, signed, policy, trust, {})
    assert "aggregate is malformed" in r.reason


def test_policy_withholds_chunks_with_fewer_than_k_contributors(world: World) -> None:
    a = world.update("site-a", 5, 1, chunk_ids=[0, 1])
    b = world.update("site-b", 5, 2, chunk_ids=[0])
    approval = evaluate(world.request(5, [a, b]), world.policy(), world.trust(), {})
    assert approval.released_chunks == (0,) and approval.withheld_chunks == (1,)
    relaxed = world.policy(min_contributors_per_chunk=1)
    all_chunks = evaluate(world.request(5, [a, b]), relaxed, world.trust(), {})
    assert all_chunks.released_chunks == (0, 1) and all_chunks.withheld_chunks == ()
    lonely = world.update("site-b", 5, 2, chunk_ids=[1])
    only0 = world.update("site-a", 5, 1, chunk_ids=[0])
    r = _refusal(
        "PERMISSION_DENIED",
        evaluate,
        world.request(5, [only0, lonely]),
        world.policy(),
        world.trust(),
        {},
    )
    assert "nothing released" in r.reason


def test_policy_config_refuses_a_threshold_below_one(world: World) -> None:
    for bad in ({"min_participants": 0}, {"min_contributors_per_chunk": 0}):
        with pytest.raises(ValueError, match=">= 1"):
            world.policy(**bad)
    with pytest.raises(ValueError, match="weighting"):
        world.policy(weighting="by-vibes")


# ---------------------------------------------------------------------------- engine


def _engine(world: World, state: Path) -> tuple[KeyHolder, DecryptionStore, HashChainLog]:
    store = DecryptionStore(state / "kh.sqlite", "kh-test", PARAMS.fingerprint)
    audit = HashChainLog(state / "audit.jsonl", _key(world.kits.keyholder_kit))
    # A new seed per release (as production draws one from the OS), so a second decryption
    # would release other values than the first.
    seeds = itertools.count(7)
    engine = KeyHolder(
        world.secret,
        world.policy(),
        world.trust(),
        store,
        audit,
        _key(world.kits.keyholder_kit),
        rng_factory=lambda: np.random.default_rng(next(seeds)),
    )
    return engine, store, audit


def _check_sum(world: World, result: DecryptResult, ups: Sequence[Update]) -> None:
    expected = np.sum([u.weight * u.vector for u in ups], axis=0)
    for cid, sums in result.sums.items():
        sl = world.layout.chunk_slice(cid)
        err = np.max(np.abs(sums - expected[sl]))
        std = result.flooding_std[cid]
        assert std > 0
        assert err <= 6 * std + 1e-12, (cid, err, std)
        # The documented target is on the released FedAvg mean S_c / W_c.
        assert err / sum(u.weight for u in ups) <= 1e-4


def test_engine_grants_once_persists_and_logs(world: World, tmp_path: Path) -> None:
    engine, store, _audit = _engine(world, tmp_path)
    ups = [world.update("site-a", 1, 1), world.update("site-b", 1, 2), world.update("site-c", 1, 3)]
    req = world.request(1, ups)
    result = engine.decrypt(req, "coordinator")
    _check_sum(world, result, ups)
    verify_message(
        world.keyholder_verify, DECRYPT_RESULT_DOMAIN, result.digest(), result.keyholder_signature
    )
    # An identical retry returns the very same released values (no second decryption).
    again = engine.decrypt(req, "coordinator")
    for cid in result.sums:
        assert np.array_equal(again.sums[cid], result.sums[cid])
    # A different request for the same round is refused, also after a restart.
    other = world.request(1, ups[:2])
    with pytest.raises(PolicyRefusal) as info:
        engine.decrypt(other, "coordinator")
    assert info.value.code == "FAILED_PRECONDITION"
    store.close()
    engine2, store2, _ = _engine(world, tmp_path)
    with pytest.raises(PolicyRefusal) as info:
        engine2.decrypt(other, "coordinator")
    assert info.value.code == "FAILED_PRECONDITION"
    assert store2.decrypted_rounds() == {1: req.digest().hex()}
    store2.close()
    vk = world.keyholder_verify
    assert verify_log(tmp_path / "audit.jsonl", vk) == 4
    kinds = [e.kind for e in read_log(tmp_path / "audit.jsonl")]
    assert kinds == ["decrypt.granted", "decrypt.retry", "decrypt.refused", "decrypt.refused"]
    refused = read_log(tmp_path / "audit.jsonl")[2].payload
    assert refused["code"] == "FAILED_PRECONDITION" and "already decrypted" in refused["reason"]


def test_engine_refuses_aggregate_under_another_key_without_burning_round(
    world: World, tmp_path: Path
) -> None:
    engine, store, _audit = _engine(world, tmp_path)
    other_public = SecretContext.generate(PARAMS).public()
    foreign = World(**{**world.__dict__, "public": other_public})
    bad_ups = [foreign.update("site-a", 1, 1), foreign.update("site-b", 1, 2)]
    with pytest.raises(PolicyRefusal) as info:
        engine.decrypt(foreign.request(1, bad_ups), "coordinator")
    assert info.value.code == "INVALID_ARGUMENT"
    assert store.decrypted_rounds() == {}
    ups = [world.update("site-a", 1, 1), world.update("site-b", 1, 2)]
    _check_sum(world, engine.decrypt(world.request(1, ups), "coordinator"), ups)
    store.close()
    kinds = [e.kind for e in read_log(tmp_path / "audit.jsonl")]
    assert kinds == ["decrypt.refused", "decrypt.granted"]


def test_store_keeps_released_values_only_for_recent_rounds(tmp_path: Path) -> None:
    store = DecryptionStore(tmp_path / "s.sqlite", "fed", "a" * 64, keep_released_rounds=2)
    for r in (1, 2, 3, 4):
        res = DecryptResult("fed", r, {0: np.full(3, float(r))}, {0: 0.5}, b"\x01" * 64)
        store.record(f"{r:064x}", ("s1", "s2"), (), res)
    assert sorted(store.decrypted_rounds()) == [1, 2, 3, 4]
    assert np.array_equal(store.load_result("fed", 4).sums[0], np.full(3, 4.0))
    assert store.load_result("fed", 3).flooding_std == {0: 0.5}
    with pytest.raises(StoreError, match="no longer kept"):
        store.load_result("fed", 2)
    with pytest.raises(StoreError, match="already recorded"):
        store.record("f" * 64, (), (), DecryptResult("fed", 4, {0: np.zeros(1)}, {0: 1.0}))
    store.close()


def test_store_refuses_foreign_state(tmp_path: Path) -> None:
    DecryptionStore(tmp_path / "s.sqlite", "fed-a", "a" * 64).close()
    with pytest.raises(StoreError, match="federation_id"):
        DecryptionStore(tmp_path / "s.sqlite", "fed-b", "a" * 64)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        DecryptionStore(tmp_path / "junk.sqlite", "fed-a", "a" * 64)


def test_secret_key_at_rest_is_encrypted(tmp_path: Path) -> None:
    secret, created = load_or_create_secret(tmp_path, PARAMS, b"p" * 32, scrypt_log2_n=10)
    assert created
    blob = (tmp_path / "secret_key.enc").read_bytes()
    assert (tmp_path / "secret_key.enc").stat().st_mode & 0o777 == 0o600
    raw_secret = secret._secret_key_blob  # test-only peek at the plaintext key bytes
    assert len(raw_secret) > 1000
    assert raw_secret not in blob and raw_secret[:64] not in blob and raw_secret[-64:] not in blob
    public_blob = (tmp_path / "public_context.bin").read_bytes()
    assert raw_secret[:64] not in public_blob
    assert not PublicContext.from_bytes(public_blob).is_private()
    (tmp_path / "public_context.bin").unlink()  # first start stopped between its two writes
    again, created = load_or_create_secret(tmp_path, PARAMS, b"p" * 32, scrypt_log2_n=10)
    assert not created and again.public().to_bytes() == secret.public().to_bytes()
    assert (tmp_path / "public_context.bin").read_bytes() == public_blob
    with pytest.raises(KeyStoreError, match="cannot unlock"):
        load_or_create_secret(tmp_path, PARAMS, b"wrong passphrase", scrypt_log2_n=10)
    with pytest.raises(KeyStoreError, match="parameters"):
        load_or_create_secret(tmp_path, PRESETS["n8192"], b"p" * 32, scrypt_log2_n=10)


# ---------------------------------------------------------------------------- real gRPC service


def _args(world: World, state: Path) -> argparse.Namespace:
    return argparse.Namespace(
        kit=world.kits.keyholder_kit,
        state=state,
        address="127.0.0.1:0",
        passphrase_file=None,
        grace=0.0,
        scrypt_log2n=10,
    )


@pytest.fixture
def running(world: World, tmp_path: Path) -> Iterator[keyholder_cmd.RunningKeyHolder]:
    kh = keyholder_cmd.start(_args(world, tmp_path / "state"))
    try:
        yield kh
    finally:
        kh.stop()


def _channel(kit: Path, port: int) -> grpc.Channel:
    return create_channel(f"127.0.0.1:{port}", TlsIdentity.from_kit(kit))


def _decrypt(kit: Path, port: int, req: DecryptRequest) -> DecryptResult:
    with _channel(kit, port) as ch:
        return KeyHolderClient(ch, timeout_s=60).decrypt(req, max_values=10**8)


def _code(kit: Path, port: int, req: DecryptRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        _decrypt(kit, port, req)
    return info.value.code(), info.value.details() or ""


def test_service_over_mtls(world: World, running: keyholder_cmd.RunningKeyHolder) -> None:
    port, coord = running.port, world.kits.coordinator_kit
    # The public context served is the key holder's, and it cannot decrypt.
    with _channel(world.kits.site_kits["site-a"], port) as ch:
        assert check_health(ch) and check_health(ch, "cipherfed.v1.KeyHolder")
        blob = assemble_blob(
            pb_grpc.KeyHolderStub(ch).GetPublicContext(pb.ContextRequest(federation_id="kh-test")),
            max_size=10**8,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(
                pb_grpc.KeyHolderStub(ch).GetPublicContext(
                    pb.ContextRequest(params_fingerprint="0" * 64)
                )
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    public = PublicContext.from_bytes(blob)
    assert not public.is_private() and public.fingerprint == PARAMS.fingerprint
    served = World(**{**world.__dict__, "public": public})

    ups = [served.update("site-a", 1, 11), served.update("site-b", 1, 12)]
    req = served.request(1, ups)
    # Only the coordinator may ask.
    code, details = _code(world.kits.site_kits["site-a"], port, req)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "only the coordinator" in details
    # Fewer than K signatures; not signed by the coordinator.
    code, details = _code(coord, port, served.request(1, ups[:1]))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "K=2" in details
    code, details = _code(coord, port, served.request(1, ups, signer=world.site_keys["site-b"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not signed by the coordinator" in details
    # Granted: the aggregate decrypts to the weighted sum within the flooding tolerance,
    # and the answer carries the key holder's signature.
    result = _decrypt(coord, port, req)
    _check_sum(served, result, ups)
    verify_message(
        world.keyholder_verify, DECRYPT_RESULT_DOMAIN, result.digest(), result.keyholder_signature
    )
    # A second decryption of the round is refused.
    code, details = _code(coord, port, served.request(1, [*ups, served.update("site-c", 1, 13)]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already decrypted" in details
    # A garbage stream is INVALID_ARGUMENT.
    with _channel(coord, port) as ch:
        bad = iter([pb.DecryptMessage(aggregate_piece=pb.BlobChunk(data=b"x"))])
        with pytest.raises(grpc.RpcError) as info:
            list(pb_grpc.KeyHolderStub(ch).DecryptAggregate(bad, timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_service_restart_keeps_key_and_rounds(world: World, tmp_path: Path) -> None:
    state = tmp_path / "state"
    kh = keyholder_cmd.start(_args(world, state))
    try:
        with _channel(world.kits.coordinator_kit, kh.port) as ch:
            blob = assemble_blob(
                pb_grpc.KeyHolderStub(ch).GetPublicContext(pb.ContextRequest()), max_size=10**8
            )
            assert KeyHolderClient(ch).public_context("kh-test", PARAMS.fingerprint) == blob
        served = World(**{**world.__dict__, "public": PublicContext.from_bytes(blob)})
        ups = [served.update("site-a", 1, 21), served.update("site-c", 1, 23)]
        _decrypt(world.kits.coordinator_kit, kh.port, served.request(1, ups))
    finally:
        kh.stop()
    kh = keyholder_cmd.start(_args(world, state))
    try:
        code, _ = _code(
            world.kits.coordinator_kit,
            kh.port,
            served.request(1, [*ups[::-1], served.update("site-b", 1, 2)]),
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        ups2 = [served.update("site-a", 2, 31), served.update("site-b", 2, 32)]
        _check_sum(
            served, _decrypt(world.kits.coordinator_kit, kh.port, served.request(2, ups2)), ups2
        )
    finally:
        kh.stop()
    entries = read_log(state / "audit.jsonl")
    assert verify_log(state / "audit.jsonl", world.keyholder_verify) == len(entries)
    kinds = [e.kind for e in entries]
    assert kinds[0] == "keys.generated" and kinds.count("keys.generated") == 1
    assert kinds.count("decrypt.granted") == 2 and "decrypt.refused" in kinds
    assert kinds[-1] == "keyholder.stopped"


def test_production_key_holder_floods_with_a_fresh_os_seeded_generator() -> None:
    """The command builds its KeyHolder without ``rng_factory``, whose default draws a new
    OS-seeded generator for every release (a fixed or reused seed would let the coordinator
    predict the flooding noise)."""
    default = inspect.signature(KeyHolder).parameters["rng_factory"].default
    assert default is np.random.default_rng
    source = Path(keyholder_cmd.__file__).read_text()
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "KeyHolder"
    ]
    assert len(calls) == 1
    assert all(kw.arg != "rng_factory" for kw in calls[0].keywords)
    assert len(calls[0].args) == 6  # secret, policy, trust, store, audit, signing key
