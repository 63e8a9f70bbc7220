"""Docs that cannot go stale: README's and docs/'s Python examples run, and every ``dspose`` line parses.

Rules (the doc writer's side of this test):

- A ```` ```python ```` block directly preceded by the line ``<!-- doctest -->`` is runnable. It runs in a
  fresh namespace, in a temporary folder that holds what the examples name: ``runs/demo/train/last.pt`` (a
  checkpoint of the demo's model, ``dspose_t`` on the LSP-14 skeleton) and the images ``photo.jpg`` and
  ``person.jpg``. Every ``print(...)`` line of such a block states what it prints with a trailing
  ``# -> TEXT`` comment; ``...`` in ``TEXT`` stands for any characters (as doctest's ELLIPSIS).
- A ``dspose`` command line is one that starts with ``dspose `` or ``$ dspose `` inside a fenced or indented
  code block (after ``VAR=value`` prefixes; ``... -m dspose_graph ARGS`` counts too, as under ``torchrun``),
  or an inline code span starting with ``dspose `` in a table row. It must parse with the real argument parser
  of ``dspose_graph.cli.main``. Placeholders are substituted first (``PLACEHOLDERS``), ``a\\|b`` in a table
  cell is tried with each alternative, and ``[...]`` marks optional arguments, which are parsed as written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dspose_graph.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = "<!-- doctest -->"
# Placeholder words in documented command lines -> a value the parser accepts (where the parser restricts it).
PLACEHOLDERS = {"NAME": "dspose_b", "MODEL": "dspose_b", "TABLE": "table7", "AREA": "dark"}
_FENCE = re.compile(r"^\s*```(\w*)")
_INLINE = re.compile(r"`(dspose [^`]+)`")
_CLAIM = re.compile(r"#\s*->\s*(.*?)\s*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_examples() -> list[tuple[str, int, str]]:
    """``(file, first line, code)`` of every runnable Python block."""
    found = []
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            fence = _FENCE.match(line)
            if not fence or fence.group(1) != "python" or i == 0 or lines[i - 1].strip() != MARKER:
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            found.append((_relative(path), i + 2, "\n".join(lines[i + 1:end])))
    return found


def _code_lines(lines: list[str]) -> list[tuple[int, str]]:
    """``(line number, text)`` of the lines inside fenced or (4-space) indented code blocks, continuations joined."""
    out: list[tuple[int, str]] = []
    in_fence = False
    pending: tuple[int, str] | None = None
    for n, line in enumerate(lines, 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not (in_fence or line.startswith("    ")) and pending is None:
            continue
        text = line.strip()
        if pending is not None:
            start, head = pending
            text = f"{head} {text}"
            n = start
        if text.endswith("\\"):
            pending = (n, text[:-1].rstrip())
            continue
        pending = None
        out.append((n, text))
    return out


def _dspose_args(text: str) -> list[str] | None:
    """The arguments after ``dspose`` (or ``-m dspose_graph``) of a shell line, or None if it runs something else."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    if words[:1] == ["$"]:
        words = words[1:]
    while words and _ENV.match(words[0]):
        words = words[1:]
    if words[:1] == ["dspose"]:
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "dspose_graph":
            return words[i + 2:]
    return None


def _table_variants(span: str) -> list[str]:
    """A table cell's command with each ``a\\|b`` alternative in turn and ``[...]`` brackets removed."""
    words = span.replace("[", "").replace("]", "").split()
    choices = [w.split("\\|") for w in words]
    return [" ".join(c) for c in itertools.product(*choices)]


def command_lines() -> list[tuple[str, int, list[str]]]:
    """``(file, line, argv)`` of every documented ``dspose`` command, placeholders substituted."""
    found = []
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        candidates = [(n, text) for n, text in _code_lines(lines)]
        for n, line in enumerate(lines, 1):
            if line.lstrip().startswith("|"):
                candidates += [(n, v) for span in _INLINE.findall(line) for v in _table_variants(span)]
        for n, text in candidates:
            args = _dspose_args(text)
            if args is not None:
                found.append((_relative(path), n, [PLACEHOLDERS.get(a, a) for a in args]))
    return found


EXAMPLES = python_examples()
COMMANDS = command_lines()


def test_the_rules_find_what_the_docs_promise():
    # README's model and Predictor examples are runnable; the command table and the docs' command lines are found.
    assert any(f == "README.md" and "Predictor(" in code for f, _, code in EXAMPLES)
    assert any(f == "README.md" and "create_model(" in code for f, _, code in EXAMPLES)
    readme = {argv[0] for f, _, argv in COMMANDS if f == "README.md"}
    assert {"topology", "info", "train", "experiment", "eval-coco", "eval-mpii", "predict", "plot", "export",
            "synth", "bench"} <= readme
    assert len(COMMANDS) >= 40


def test_command_line_rules_on_inline_text():
    lines = ["text", "```bash", "OMP_NUM_THREADS=2 dspose train A.yaml  # comment", "```", "",
             "    torchrun --nnodes 2 \\", "        -m dspose_graph train B.yaml", "| `dspose plot a\\|b --out D` |"]
    code = _code_lines(lines)
    assert code == [(3, "OMP_NUM_THREADS=2 dspose train A.yaml  # comment"),
                    (6, "torchrun --nnodes 2 -m dspose_graph train B.yaml")]
    assert [_dspose_args(t) for _, t in code] == [["train", "A.yaml"], ["train", "B.yaml"]]
    assert _table_variants("dspose plot a\\|b [--out D]") == ["dspose plot a --out D", "dspose plot b --out D"]
    assert _dspose_args("make demo DATA=x") is None


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("where,line,argv", COMMANDS, ids=[f"{f}:{n}" for f, n, _ in COMMANDS])
def test_documented_command_parses(parser, where, line, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except argparse.ArgumentError as e:
        pytest.fail(f"{where}:{line}: `dspose {shlex.join(argv)}` does not parse: {e}")
    except SystemExit as e:
        if e.code:
            lines = err.getvalue().strip().splitlines()
            pytest.fail(f"{where}:{line}: `dspose {shlex.join(argv)}` does not parse: {lines[-1] if lines else e}")


@pytest.fixture
def example_dir(tmp_path, monkeypatch, make_checkpoint):
    """A folder with the files the examples name: the demo's checkpoint and two photos."""
    make_checkpoint(tmp_path / "runs" / "demo" / "train" / "last.pt", schema="lsp")
    rng = np.random.default_rng(0)
    for name in ("photo.jpg", "person.jpg"):
        Image.fromarray(rng.integers(0, 256, (320, 200, 3), dtype=np.uint8)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _claims(code: str, where: str) -> list[str]:
    claims = []
    for n, line in enumerate(code.splitlines()):
        if line.lstrip().startswith("print("):
            match = _CLAIM.search(line)
            assert match, f"{where}+{n}: a print in a runnable example must state its output as `# -> TEXT`"
            claims.append(match.group(1))
    return claims


@pytest.mark.parametrize("where,line,code", EXAMPLES, ids=[f"{f}:{n}" for f, n, _ in EXAMPLES])
def test_python_example_runs_and_prints_what_it_claims(example_dir, capsys, where, line, code):
    claims = _claims(code, f"{where}:{line}")
    exec(compile(code, f"{where}:{line}", "exec"), {"__name__": "__doc_example__"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(claims), f"{where}:{line}: printed {printed}, the example claims {claims}"
    for got, claim in zip(printed, claims):
        pattern = ".*".join(re.escape(part) for part in claim.split("..."))
        assert re.fullmatch(pattern, got), f"{where}:{line}: printed {got!r}, the example claims {claim!r}"
