"""The committed generated stubs must equal a fresh regeneration byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_match_committed(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    gen = _load_gen_protos()
    written = gen.generate(tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "cipherfed_pb2.py",
        "cipherfed_pb2.pyi",
        "cipherfed_pb2_grpc.py",
        "cipherfed_pb2_grpc.pyi",
    ]
    stale = [
        name
        for name in names
        if (ROOT / "proto" / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    assert not stale, f"generated stubs drifted from proto/*.proto: {stale}; run make protos"


def test_drift_is_detected(tmp_path: Path) -> None:
    """A changed .proto would produce different stubs (the comparison above can fail)."""
    pytest.importorskip("grpc_tools")
    gen = _load_gen_protos()
    gen.generate(tmp_path)
    committed = (ROOT / "proto" / "cipherfed_pb2.py").read_bytes()
    assert committed == (tmp_path / "cipherfed_pb2.py").read_bytes()
    edited = (tmp_path / "cipherfed_pb2.py").read_bytes().replace(b"BlobChunk", b"BlobChunX")
    assert edited != committed


def test_stubs_import_package_relative() -> None:
    from proto import cipherfed_pb2, cipherfed_pb2_grpc

    assert cipherfed_pb2.DESCRIPTOR.package == "cipherfed.v1"
    assert hasattr(cipherfed_pb2_grpc, "CoordinatorStub")
    assert hasattr(cipherfed_pb2_grpc, "KeyHolderServicer")
    msg = cipherfed_pb2.UploadMessage(piece=cipherfed_pb2.CiphertextPiece(chunk_id=3, data=b"x"))
    again = cipherfed_pb2.UploadMessage.FromString(msg.SerializeToString())
    assert again.WhichOneof("kind") == "piece" and again.piece.chunk_id == 3
