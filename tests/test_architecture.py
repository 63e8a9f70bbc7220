"""Imports point down the layers of docs/architecture.md: every module's imports, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Module prefix -> layer; a module may import its own layer and those below, never one above.
LAYERS = {
    "dspose_graph.io": 0,
    "dspose_graph.process": 0,
    "dspose_graph.formats": 0,
    "dspose_graph.topology": 1,
    "dspose_graph.graph": 2,
    "dspose_graph.models": 3,
    "dspose_graph.weights": 3,
    "dspose_graph.data": 4,
    "dspose_graph.eval": 4,
    "dspose_graph.train": 5,
    "dspose_graph.predict": 6,
    "dspose_graph.predict_files": 6,
    "dspose_graph.detect": 6,
    "dspose_graph.export": 6,
    "dspose_graph.benchmarks": 6,
    "dspose_graph.viz": 6,
    "dspose_graph.demo": 6,
    "dspose_graph.cli": 7,
    "dspose_graph.__main__": 7,
}
# The package itself: ``import dspose_graph`` reaches only ``__version__``; its ``__init__`` is the public
# facade whose lazy attribute imports (create_model, Predictor...) are exempt.
PACKAGE = "dspose_graph"


def layer_of(module: str) -> int | None:
    """The layer of a project module (``None`` for third-party modules); ``KeyError`` for an unplaced one."""
    if module == PACKAGE:
        return 0
    if module.split(".")[0] != PACKAGE:
        return None
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    if not matches:
        raise KeyError(f"module {module} has no layer in LAYERS (add it, see docs/architecture.md)")
    return LAYERS[max(matches, key=len)]


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    if base == PACKAGE:  # `from dspose_graph import io` names a submodule
        return [f"{PACKAGE}.{a.name}" if any(p == f"{PACKAGE}.{a.name}" for p in LAYERS) else PACKAGE
                for a in node.names]
    return [base]


def upward_imports(source: str, module: str, is_package: bool = False, filename: str = "<string>") -> list[str]:
    """``"file:line: module (layer a) imports target (layer b)"`` for every import of a higher layer."""
    own = layer_of(module)
    problems = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        for target in _imported(node, module, is_package):
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                problems.append(f"{filename}:{node.lineno}: {module} (layer {own}) imports {target} (layer {theirs})")
    return problems


def _modules() -> list[tuple[Path, str, bool]]:
    out = []
    for path in sorted((ROOT / "dspose_graph").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out.append((path, name, is_package))
    return out


def test_the_rule_flags_an_upward_import_inside_a_function():
    snippet = "import torch\nfrom dspose_graph.graph.layers import GraphLayer\n\n" \
              "def f():\n    from dspose_graph.train.trainer import Trainer\n    return Trainer\n"
    assert upward_imports(snippet, "dspose_graph.models.heads", filename="heads.py") == [
        "heads.py:5: dspose_graph.models.heads (layer 3) imports dspose_graph.train.trainer (layer 5)"]
    assert upward_imports("from ..cli import main\n", "dspose_graph.train.trainer")[0].endswith(
        "imports dspose_graph.cli (layer 7)")
    assert upward_imports("from dspose_graph import cli\n", "dspose_graph.topology.schemas")
    assert upward_imports("from dspose_graph.models import create_model\n", "dspose_graph.cli.info") == []
    with pytest.raises(KeyError, match="dspose_graph.newthing has no layer"):
        upward_imports("import dspose_graph.newthing\n", "dspose_graph.cli.main")


def test_every_module_has_a_layer():
    unplaced = []
    for _, name, _ in _modules():
        try:
            layer_of(name)
        except KeyError as e:
            unplaced.append(str(e))
    assert not unplaced, "\n".join(unplaced)


def test_imports_point_down():
    problems = []
    for path, name, is_package in _modules():
        if name == PACKAGE:
            continue
        problems += upward_imports(path.read_text(), name, is_package, str(path.relative_to(ROOT)))
    assert not problems, "upward imports:\n" + "\n".join(problems)
