"""Import rules (DESIGN.md section 1), checked on the source with ``ast``.

participant -> crypto, proto; coordinator -> crypto (public side only), proto;
keyholder -> crypto, proto; crypto -> nothing of the project. The coordinator may never
import ``crypto.secret`` nor name ``SecretContext``. Dynamic imports with a literal module
name (``importlib.import_module("x")``, ``__import__("x")``) count as imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = frozenset(
    {"crypto", "participant", "coordinator", "keyholder", "proto", "cipherfed", "scripts", "tests"}
)
ALLOWED: dict[str, frozenset[str]] = {
    "crypto": frozenset({"crypto"}),
    "participant": frozenset({"participant", "crypto", "proto"}),
    "coordinator": frozenset({"coordinator", "crypto", "proto"}),
    "keyholder": frozenset({"keyholder", "crypto", "proto"}),
}
SECRET_MODULE = "crypto.secret"
SECRET_NAME = "SecretContext"


def _imports(tree: ast.AST, module: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, imported names) for every import in ``tree``."""
    package = module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                base = package[: len(package) - up] if up <= len(package) else []
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
            yield node.lineno, target, names
            for name in names:  # `from crypto import secret` imports the module crypto.secret
                yield node.lineno, f"{target}.{name}" if target else name, ()
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            is_dynamic = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
                isinstance(func, ast.Name) and func.id in ("__import__", "import_module")
            )
            arg = node.args[0]
            if is_dynamic and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value, ()


def violations(source: str, module: str) -> list[str]:
    """Every import-rule violation in ``source``, the text of module ``module``."""
    top = module.split(".")[0]
    allowed = ALLOWED[top]
    tree = ast.parse(source)
    found: list[str] = []
    for line, target, names in _imports(tree, module):
        root = target.split(".")[0]
        if root in PROJECT and root not in allowed:
            found.append(f"{module}:{line}: {top} must not import {target}")
        if top == "coordinator":
            if target == SECRET_MODULE or target.startswith(SECRET_MODULE + "."):
                found.append(f"{module}:{line}: coordinator must not import {target}")
            if SECRET_NAME in names:
                found.append(f"{module}:{line}: coordinator must not import {SECRET_NAME}")
    if top == "coordinator":
        for node in ast.walk(tree):
            name = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else None
            )
            if name == SECRET_NAME:
                found.append(f"{module}:{node.lineno}: coordinator must not name {SECRET_NAME}")
    return found


def _project_modules() -> Iterator[tuple[Path, str]]:
    for top in ALLOWED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            yield path, ".".join(rel.parts)


def test_the_project_follows_the_import_rules() -> None:
    checked = 0
    problems: list[str] = []
    for path, module in _project_modules():
        problems += violations(path.read_text(encoding="utf-8"), module)
        checked += 1
    assert checked >= 4  # the packages exist and were scanned
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("crypto.packing", "import participant.model\n"),
        ("crypto.packing", "from cipherfed import simulation\n"),
        ("crypto.sub.mod", "from ...participant import model\n"),
        ("participant.training", "from coordinator.fedavg import fedavg\n"),
        ("participant.training", "import keyholder\n"),
        ("participant.training", "from .. import cipherfed\n"),
        ("participant.training", "import importlib\nimportlib.import_module('coordinator.x')\n"),
        ("keyholder.service", "from participant import data\n"),
        ("keyholder.service", "__import__('coordinator')\n"),
        ("coordinator.service", "from crypto.secret import SecretContext\n"),
        ("coordinator.service", "import crypto.secret\n"),
        ("coordinator.service", "from crypto import secret\n"),
        ("coordinator.service", "from crypto import SecretContext\n"),
        ("coordinator.service", "import crypto\nctx = crypto.SecretContext\n"),
        ("coordinator.service", "from ..crypto.secret import generate\n"),
        ("coordinator.service", "from participant.training import LocalTrainer\n"),
        ("coordinator.service", "import keyholder.policy\n"),
    ],
)
def test_forbidden_imports_are_caught(module: str, source: str) -> None:
    assert violations(source, module), f"not caught: {module}: {source!r}"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("crypto.packing", "import numpy as np\nfrom crypto import packing\nfrom . import x\n"),
        ("participant.training", "from crypto import PublicContext\nimport proto.cipherfed_pb2\n"),
        ("coordinator.service", "from crypto import PublicContext, weighted_sum\n"),
        ("coordinator.service", "from .fedavg import fedavg\nimport torch\n"),
        ("keyholder.service", "from crypto.secret import SecretContext\n"),
    ],
)
def test_permitted_imports_pass(module: str, source: str) -> None:
    assert violations(source, module) == []
