"""The committed generated stubs must match the .proto.

Byte for byte when the installed generators are the versions that made the committed
files (``proto/GENERATED_WITH``); the compiled descriptor must match in every case.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
STUBS = ["cipherfed_pb2.py", "cipherfed_pb2.pyi", "cipherfed_pb2_grpc.py", "cipherfed_pb2_grpc.pyi"]


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def _strip_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """``--descriptor_set_out`` adds json_name to fields; the embedded descriptor has none."""
    for message in messages:
        for f in message.field:
            f.ClearField("json_name")
        _strip_json_names(message.nested_type)


def test_descriptor_matches_proto_source() -> None:
    """Version-independent: the committed module describes exactly proto/cipherfed.proto."""
    pytest.importorskip("grpc_tools")
    from proto import cipherfed_pb2

    gen = _load_gen_protos()
    fresh = descriptor_pb2.FileDescriptorSet.FromString(gen.descriptor_set())
    assert [f.name for f in fresh.file] == ["cipherfed.proto"]
    _strip_json_names(fresh.file[0].message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        cipherfed_pb2.DESCRIPTOR.serialized_pb
    )
    assert committed == fresh.file[0], "proto/cipherfed.proto changed: run make protos"


def test_generated_stubs_match_committed_bytes(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    gen = _load_gen_protos()
    recorded = (ROOT / "proto" / gen.VERSIONS_FILE).read_text()
    try:
        installed = gen.generator_versions()
    except Exception as exc:  # a generator is not installed
        pytest.skip(f"generators unavailable: {exc}")
    if installed != recorded:
        pytest.skip(f"stubs were generated with {recorded!r}, installed {installed!r}")
    written = gen.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted([*STUBS, gen.VERSIONS_FILE])
    stale = [
        name
        for name in STUBS
        if (ROOT / "proto" / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    assert not stale, f"generated stubs drifted from proto/*.proto: {stale}; run make protos"


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    """The checks above can fail: an edited .proto gives another descriptor and other bytes."""
    pytest.importorskip("grpc_tools")
    gen = _load_gen_protos()
    edited = tmp_path / "cipherfed.proto"
    source = (ROOT / "proto" / "cipherfed.proto").read_text()
    edited.write_text(source.replace("uint64 total_size = 3;", "uint64 total_bytes = 3;", 1))
    original = gen.descriptor_set()
    gen.PROTO_DIR = tmp_path  # type: ignore[attr-defined]
    try:
        changed = gen.descriptor_set()
        gen.generate(tmp_path / "out")
    finally:
        gen.PROTO_DIR = ROOT / "proto"  # type: ignore[attr-defined]
    assert changed != original
    committed = (ROOT / "proto" / "cipherfed_pb2.py").read_bytes()
    assert (tmp_path / "out" / "cipherfed_pb2.py").read_bytes() != committed


def test_stubs_import_package_relative() -> None:
    from proto import cipherfed_pb2, cipherfed_pb2_grpc

    assert cipherfed_pb2.DESCRIPTOR.package == "cipherfed.v1"
    assert hasattr(cipherfed_pb2_grpc, "CoordinatorStub")
    assert hasattr(cipherfed_pb2_grpc, "KeyHolderServicer")
    msg = cipherfed_pb2.UploadMessage(piece=cipherfed_pb2.CiphertextPiece(chunk_id=3, data=b"x"))
    again = cipherfed_pb2.UploadMessage.FromString(msg.SerializeToString())
    assert again.WhichOneof("kind") == "piece" and again.piece.chunk_id == 3
