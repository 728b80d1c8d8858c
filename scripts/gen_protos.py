"""Regenerate the committed protobuf/gRPC stubs (with ``.pyi``) from ``proto/*.proto``.

Usage: ``python scripts/gen_protos.py [--out DIR]`` (default: ``proto/`` itself).
Generated modules import each other package-relatively (``from . import cipherfed_pb2``)
so they work as ``proto.cipherfed_pb2``. ``tests/test_proto_drift.py`` regenerates into a
temporary folder and compares byte for byte.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
VERSIONS_FILE = "GENERATED_WITH"
GENERATORS = ("grpcio-tools", "mypy-protobuf")


def generator_versions() -> str:
    """The generator versions the output depends on, one ``name==version`` per line."""
    from importlib.metadata import version

    return "".join(f"{name}=={version(name)}\n" for name in GENERATORS)


def descriptor_set(protos: list[Path] | None = None) -> bytes:
    """A serialized ``FileDescriptorSet`` of ``proto/*.proto`` (no source info)."""
    from grpc_tools import protoc

    files = protos or sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            *[p.name for p in files],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return out.read_bytes()


def _plugin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install mypy-protobuf (pip install -e '.[dev]')")
    return found


def _fix_imports(text: str, modules: list[str]) -> str:
    for mod in modules:
        text = re.sub(rf"^import {mod} as (\w+)$", rf"from . import {mod} as \1", text, flags=re.M)
        text = re.sub(rf"^import {mod}$", rf"from . import {mod}", text, flags=re.M)
    return text


def generate(out_dir: Path) -> list[Path]:
    """Generate stubs for every ``proto/*.proto`` into ``out_dir``; return the files."""
    from grpc_tools import protoc  # dev dependency, imported only when generating

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files in {PROTO_DIR}")
    include = Path(protoc.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *[p.name for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        modules = [p.stem + "_pb2" for p in protos]
        written: list[Path] = []
        for path in sorted(Path(tmp).iterdir()):
            if not path.name.endswith(GENERATED_SUFFIXES):
                continue
            target = out_dir / path.name
            target.write_text(_fix_imports(path.read_text(), modules))
            written.append(target)
    versions = out_dir / VERSIONS_FILE
    versions.write_text(generator_versions())
    written.append(versions)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
