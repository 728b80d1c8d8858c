"""Bad input against a real coordinator process (real key holder, mutual TLS on loopback).

Each case is answered with a clear gRPC status, logged by the coordinator, and nothing
stored is lost: the accepted updates of the round stay, and the round still completes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import crypto
from cipherfed import site_setup
from cipherfed.localfed import LocalFederation
from cipherfed.provisioning import provision
from crypto.secret import SecretContext
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto import streams, transport
from tests.e2e_helpers import send, signed_upload, small_config, start_services, stub_for

pytestmark = pytest.mark.slow
MAX_BYTES = 200_000  # one n4096 chunk is ~62 kB


@dataclasses.dataclass
class Env:
    fed: LocalFederation
    ctx: crypto.PublicContext
    layout: crypto.ChunkLayout
    keys: dict[str, crypto.SigningKey]
    stubs: dict[str, pb_grpc.CoordinatorStub]
    address: str

    def upload(
        self, site: str, round_no: int, **kw: object
    ) -> tuple[pb.UploadHeader, dict[int, bytes]]:
        return signed_upload(
            self.ctx,
            self.layout,
            self.keys[kw.pop("signer", site)],  # type: ignore[arg-type]
            federation_id=self.fed.cfg.federation.id,
            round_no=round_no,
            site_id=site,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("badinput")
    cfg = small_config(3, k=2, rounds=2, deadline_s=600, max_update_bytes=MAX_BYTES)
    with LocalFederation(root, cfg) as fed:
        start_services(fed)
        ready = fed.coordinator_ready()
        assert ready is not None
        address = f"127.0.0.1:{ready['port']}"
        channels, stubs, keys = [], {}, {}
        for site, kit in fed.kits.site_kits.items():
            ch, stubs[site] = stub_for(kit, address)
            channels.append(ch)
            keys[site] = crypto.SigningKey.from_pem((kit / "signing_key.pem").read_bytes())
            stubs[site].Enrol(
                pb.EnrolRequest(
                    federation_id=cfg.federation.id,
                    site_id=site,
                    verify_key=keys[site].verify_key().to_bytes(),
                ),
                timeout=30,
            )
        blob = streams.assemble_blob(
            stubs["site-00"].GetPublicContext(pb.ContextRequest(federation_id=cfg.federation.id)),
            1 << 30,
        )
        yield Env(
            fed,
            crypto.PublicContext.from_bytes(blob),
            site_setup.chunk_layout(fed.cfg),
            keys,
            stubs,
            address,
        )
        for ch in channels:
            ch.close()


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    return err.code(), err.details()  # type: ignore[attr-defined]


def test_every_bad_input_gets_a_clear_status_and_nothing_is_lost(env: Env, tmp_path: Path) -> None:
    s0, s1, s2 = env.stubs["site-00"], env.stubs["site-01"], env.stubs["site-02"]
    header, chunks = env.upload("site-00", 1)
    receipt = send(s0, header, chunks)
    assert receipt.round == 1 and receipt.site_id == "site-00"

    # duplicate submission
    h, c = env.upload("site-00", 1, seed=1)
    assert code_of(lambda: send(s0, h, c))[0] is grpc.StatusCode.ALREADY_EXISTS

    # garbage bytes as a ciphertext (digest signed, so only the content is wrong)
    h, c = env.upload("site-01", 1)
    garbage = {cid: b"\x5a" * len(b) for cid, b in c.items()}
    env_bad = crypto.UpdateEnvelope.from_canonical_bytes(h.signed_envelope.envelope)
    env_bad = dataclasses.replace(
        env_bad, digests={cid: hashlib.sha256(b).hexdigest() for cid, b in garbage.items()}
    )
    h.signed_envelope.envelope = env_bad.canonical_bytes()
    h.signed_envelope.signature = crypto.sign_envelope(env.keys["site-01"], env_bad)
    code, msg = code_of(lambda: send(s1, h, garbage))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "ciphertext" in msg

    # a ciphertext under another key (same parameters, different key pair)
    other = SecretContext.generate(env.ctx.params).public()
    h, c = signed_upload(
        other,
        env.layout,
        env.keys["site-01"],
        federation_id=env.fed.cfg.federation.id,
        round_no=1,
        site_id="site-01",
    )
    code, msg = code_of(lambda: send(s1, h, c))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, msg

    # a wrong parameter fingerprint
    h, c = env.upload("site-01", 1, params_fingerprint=crypto.PRESETS["n8192"].fingerprint)
    code, msg = code_of(lambda: send(s1, h, c))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "fingerprint" in msg

    # an update signed by another site
    h, c = env.upload("site-01", 1, signer="site-02")
    code, msg = code_of(lambda: send(s1, h, c))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "signature" in msg

    # an envelope naming another site than the certificate
    h, c = env.upload("site-02", 1)
    code, msg = code_of(lambda: send(s1, h, c))
    assert code is grpc.StatusCode.PERMISSION_DENIED

    # an oversized stream: declared too big, and a stream larger than it declared
    h, c = env.upload("site-01", 1)
    big = {cid: b * 4 for cid, b in c.items()}
    code, msg = code_of(lambda: send(s1, h, big))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in msg

    def lying() -> Iterator[pb.UploadMessage]:
        h.total_size = sum(len(b) for b in c.values())
        yield pb.UploadMessage(header=h)
        for piece in streams.iter_ciphertext_pieces(big):
            yield pb.UploadMessage(piece=piece)

    code, _ = code_of(lambda: s1.UploadUpdate(lying(), timeout=30))
    assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)

    # an unknown client certificate (a CA of another federation) cannot even connect
    stranger = provision(small_config(1), tmp_path / "stranger")
    ch, stub = stub_for(stranger.site_kits["site-00"], env.address)
    code, _ = code_of(lambda: stub.GetRound(pb.RoundQuery(), timeout=10))
    ch.close()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)

    # nothing stored was lost; the others can still submit and the round completes
    assert env.fed.accepted(1) == ["site-00"]
    for site, stub in (("site-01", s1), ("site-02", s2)):
        h, c = env.upload(site, 1, seed=7)
        send(stub, h, c)
    env.fed.wait_for(lambda: env.fed.rounds_done() == 1, 120, "round 1 to complete")
    assert env.fed.accepted(1) == ["site-00", "site-01", "site-02"]

    # a replay of round 1, now that round 2 is open
    code, msg = code_of(lambda: send(s0, header, chunks))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "round 1" in msg

    log = env.fed.procs["coordinator"].log_path.read_text()
    assert log.count("refused UploadUpdate") >= 9
    ready = env.fed.coordinator_ready()
    assert ready is not None
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{ready['metrics_port']}/metrics").read()
    assert b'cipherfed_updates_total{outcome="InvalidSubmission"}' in metrics
    assert b"cipherfed_rounds_completed_total 1.0" in metrics
    ch, _ = stub_for(env.fed.kits.site_kits["site-00"], env.address)
    assert transport.check_health(ch)
    ch.close()


def test_coordinator_process_holds_no_secret_key(env: Env) -> None:
    """What the coordinator has (its state folder, its context) cannot decrypt."""
    assert not env.ctx.is_private()
    state = env.fed.state("coordinator")
    names = {p.name for p in state.rglob("*")}
    assert not any("secret" in n for n in names), names
    cached = crypto.PublicContext.from_bytes((state / "public_context.bin").read_bytes())
    assert cached.fingerprint == env.ctx.fingerprint and not cached.is_private()
    with pytest.raises(crypto.InvalidUpdate):
        SecretContext.import_secret_key_encrypted(
            (state / "public_context.bin").read_bytes(), b"0123456789abcdef"
        )


def test_coordinator_refuses_another_federations_state_and_keeps_it(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at a state folder of another federation, the coordinator exits 2 with one
    line naming the mismatch (no traceback) and leaves that folder's files as they were:
    the key holder's context it fetched is not cached over theirs."""
    import argparse

    from cipherfed.commands import coordinator as coordinator_cmd
    from coordinator.store import CoordinatorStore

    state = tmp_path / "theirs"
    store = CoordinatorStore(state / "coordinator.sqlite")
    store.set_meta("federation_id", "another-federation")
    store.close()
    (state / "public_context.bin").write_bytes(b"their context")
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    parser = argparse.ArgumentParser()
    coordinator_cmd.add_arguments(parser)
    args = parser.parse_args(
        ["--kit", str(env.fed.kits.coordinator_kit), "--state", str(state), "--metrics-port", "-1"]
    )
    assert coordinator_cmd.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "'another-federation'" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert {name: (state / name).read_bytes() for name in before} == before
    assert not list(state.glob("*-wal")), "the refused folder's database was left open"
    (state / "coordinator.sqlite").write_bytes(b"garbage" * 20)
    for name in ("coordinator.sqlite-wal", "coordinator.sqlite-shm"):
        (state / name).unlink(missing_ok=True)
    assert coordinator_cmd.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("not a usable coordinator database (file is not a database)")
    assert (state / "coordinator.sqlite").read_bytes() == b"garbage" * 20


def test_coordinator_ready_file_in_a_missing_folder_is_a_usage_error(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything starts or is written: one line, exit 2."""
    import argparse

    from cipherfed.commands import coordinator as coordinator_cmd

    parser = argparse.ArgumentParser()
    coordinator_cmd.add_arguments(parser)
    state = tmp_path / "state"
    args = parser.parse_args(
        [
            "--kit",
            str(env.fed.kits.coordinator_kit),
            "--state",
            str(state),
            "--metrics-port",
            "-1",
            "--ready-file",
            str(tmp_path / "missing" / "ready.json"),
        ]
    )
    assert coordinator_cmd.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --ready-file") and "no folder" in err[-1]
    assert not state.exists()
