"""Claims in README and docs/ that the code decides, checked against the code: config defaults, preset
parameter counts and the paper's numbers, the demo's settings, install steps, exit statuses, README's
overview command, dates, and no issue numbers a reader cannot follow."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dspose_graph.cli.main import EXIT_STATUS
from dspose_graph.demo.data import SETTINGS
from dspose_graph.models import create_model
from dspose_graph.train.config import TrainConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER_DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
FIRST_COMMIT = datetime.date(2026, 11, 26)  # the project's first day: no figure or decision is older


def section(text: str, heading: str) -> str:
    """The body of the Markdown section ``heading`` (a ``#`` line), up to the next heading of its level or above."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = next((j for j in range(start + 1, len(lines))
                if re.match(rf"#{{1,{level}}} ", lines[j])), len(lines))
    return "\n".join(lines[start + 1:end])


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, separator rows left out."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.lstrip().startswith("|") and not set(line.strip()) <= set("|-: ")]


def test_section_reads_until_the_next_heading_of_its_level():
    text = "# T\n## A\na1\n### A.1\na2\n## B\nb\n"
    assert section(text, "## A") == "a1\n### A.1\na2"
    assert section(text, "## B") == "b"


# --- README ---------------------------------------------------------------------------------------------------

def test_readme_two_commands_section_is_at_most_8_lines():
    body = [line for line in section(README.read_text(), "## Two commands").splitlines() if line.strip()]
    assert len(body) <= 8, f"README's 'Two commands' has {len(body)} non-blank lines (at most 8):\n" + "\n".join(body)


def test_readme_names_the_command_that_remakes_the_overview_figure():
    text = README.read_text()
    assert "docs/figures/overview.png" in text
    assert re.search(r"python docs/figures/make_overview\.py --run \S+", text)


def _preset_rows() -> list[tuple[str, dict, str, str]]:
    """README's preset table as (preset, overrides, parameters cell, paper cell)."""
    rows = table_rows(section(README.read_text(), "## Presets"))
    header, body = rows[0], rows[1:]
    name, params, paper = header.index("preset"), header.index("parameters"), header.index("paper")
    out = []
    for cells in body:
        spans = re.findall(r"`([^`]+)`", cells[name])
        presets = [s for s in spans if "=" not in s]
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in spans if "=" in s)}
        counts = [c.strip() for c in cells[params].split("/")]
        assert len(counts) == len(presets), cells
        out += [(p, overrides, c, cells[paper]) for p, c in zip(presets, counts)]
    return out


PRESET_ROWS = _preset_rows()


@pytest.mark.parametrize("preset,overrides,count,paper", PRESET_ROWS,
                         ids=[f"{p}{''.join(f'-{k}={v}' for k, v in o.items())}" for p, o, _, _ in PRESET_ROWS])
def test_readme_parameter_counts_are_the_models(preset, overrides, count, paper):
    model = create_model(preset, device="meta", **overrides)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert int(count.replace(",", "")) == trainable, f"README says {preset} {overrides} has {count}"


def _paper_cell(tables_text: str, table: int, method: str, column: str) -> str:
    body = re.split(r"^## ", tables_text, flags=re.M)
    block = next(b for b in body if re.match(rf"Table {table}\b", b))
    rows = table_rows(block)
    header = rows[0]
    row = next(r for r in rows[1:] if r[0] == method)
    return row[header.index(column)]


# README preset row -> (paper table, method row, metric column, metric name in README)
PAPER_ROWS = {
    ("tokenpose_b", ()): (2, "TokenPose-B", "AP", "AP"),
    ("dspose_b", ()): (2, "DSPose-B", "AP", "AP"),
    ("dspose_b", (("head_layers", 1),)): (8, "1", None, None),
    ("tokenpose_l", ()): (4, "TokenPose-L/D6", "Mean", "PCKh"),
    ("dspose_l", ()): (4, "DSPose-L", "Mean", "PCKh"),
}


def test_readme_paper_column_is_the_papers_tables(paper_tables):
    tables = paper_tables.read_text()
    checked = 0
    for preset, overrides, _, cell in PRESET_ROWS:
        key = (preset, tuple(sorted(overrides.items())))
        if key not in PAPER_ROWS:
            continue
        table, method, column, name = PAPER_ROWS[key]
        expected = _paper_cell(tables, table, method, "params")
        if column is not None:
            expected += f", {_paper_cell(tables, table, method, column)} {name}"
        assert cell == expected, f"README's paper column for {preset} {overrides}: {cell!r}, Table {table}: {expected!r}"
        checked += 1
    assert checked == len(PAPER_ROWS)


# --- docs/training.md -------------------------------------------------------------------------------------------

def _config_reference() -> list[tuple[str, str]]:
    """(``section.key``, default text) for each key of docs/training.md's config reference with a literal default."""
    pairs = []
    for cells in table_rows(section((ROOT / "docs/training.md").read_text(), "## Config reference"))[1:]:
        keys = re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        if keys and len(keys) == len(defaults):
            pairs += list(zip(keys, defaults))
    return pairs


def _literal(text: str):
    value = yaml.safe_load(text) if text else ""
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def test_config_reference_finds_the_documented_keys():
    keys = dict(_config_reference())
    assert {"optim.lr", "optim.epochs", "run.workers", "data.codec", "eval.decode"} <= set(keys)


@pytest.mark.parametrize("key,default", _config_reference(), ids=[k for k, _ in _config_reference()])
def test_config_reference_defaults_are_the_dataclass_defaults(key, default):
    section_name, field = key.split(".")
    actual = getattr(getattr(TrainConfig(), section_name), field)
    assert _literal(default) == actual, f"docs/training.md says {key} defaults to `{default}`, the config: {actual!r}"


def test_run_workers_values_the_docs_offer_are_accepted():
    row = next(cells for cells in table_rows((ROOT / "docs/training.md").read_text()) if cells[0] == "`run.workers`")
    offered = {v for v in re.findall(r"`([^`]+)`", " ".join(row[1:])) if re.fullmatch(r"-?\d+|auto", v)}
    assert "auto" in offered
    for value in offered:
        config_from_dict({"run": {"workers": _literal(value)}}, source="docs/training.md")


def test_documented_exit_statuses_are_the_commands():
    table = {cells[0].strip("`"): cells[1] for cells in table_rows(section((ROOT / "docs/using.md").read_text(),
                                                                             "## Errors and exit status"))[1:]}
    codes = {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", EXIT_STATUS, flags=re.M)}
    assert {int(k) for k in table} == codes
    assert "non-finite training loss" in table["4"]
    for path in USER_DOCS:  # wherever a page gives the status of a non-finite loss, it is the table's
        for m in re.finditer(r"(NaN|non-finite)[^.]{0,120}?(?:exit status|exits with status|code) (\d+)",
                             path.read_text()):
            assert m.group(2) == "4", f"{path.relative_to(ROOT)}: {m.group(0)!r}"


def _fmt(value: float) -> str:
    """1e-3 -> "1e-3", 80 -> "80", 7.5 -> "7.5": how the docs write the demo's numbers."""
    if value < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e-{int(exponent[1:])}"
    return f"{value:g}"


def test_training_md_states_the_demos_settings():
    text = " ".join(section((ROOT / "docs/training.md").read_text(), "## Demo").split())
    real, generated = SETTINGS["real"], SETTINGS["synthetic"]
    real_part = text[text.index("On real data"):text.index("On generated people")]
    generated_part = text[text.index("On generated people"):]
    for part, settings in ((real_part, real), (generated_part, generated)):
        assert f"{_fmt(settings['epochs'])} epochs" in part
        assert f"Adam {_fmt(settings['lr'])}" in part
        assert f"{_fmt(settings['minutes'])}-minute" in part
    assert generated["conv"] == "graphconv" and "GraphConv" in generated_part


def test_demo_help_states_the_demos_settings():
    import argparse

    from dspose_graph.cli import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for key in ("epochs", "lr", "minutes"):
        assert f"{SETTINGS['real'][key]:g} on real data, {SETTINGS['synthetic'][key]:g} on generated" in text


# --- docs/using.md: installing without make ----------------------------------------------------------------------

def test_install_steps_match_the_makefile_and_setup_cfg():
    steps = section((ROOT / "docs/using.md").read_text(), "## Installing without make")
    makefile = (ROOT / "Makefile").read_text()
    setup = (ROOT / "setup.cfg").read_text()
    for package in ("torch", "torchvision"):
        pins = set(re.findall(rf"\b{package}==([\d.]+)", steps))
        assert len(pins) == 1, f"docs/using.md pins {package} {pins}"
        pin = pins.pop()
        assert f"{package}=={pin}" in makefile and re.search(rf"^\s+{package}=={re.escape(pin)}\s*$", setup, re.M)
    assert "--no-build-isolation torch-scatter" in steps and "--no-build-isolation torch-scatter" in makefile
    assert 'pip install -e ".[dev]"' in steps and '-e ".[dev]"' in makefile
    dev = re.search(r"^dev =\n((?:[ \t]+\S.*\n)+)", setup, re.M)
    assert dev and all(name in dev.group(1) for name in ("pytest", "onnx", "onnxruntime"))


# --- all user pages ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_pages_cite_no_issue_numbers(path):
    found = re.findall(r".{0,30}\bissues? #?\d+.{0,30}|.{0,30}\bissue-\d+.{0,30}", path.read_text(), flags=re.I)
    assert not found, f"{path.relative_to(ROOT)}: say what the issue meant instead of its number: {found}"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_date_before_the_project_began(path):
    for text in re.findall(r"\b(20\d\d-\d\d-\d\d)\b", path.read_text()):
        assert datetime.date.fromisoformat(text) >= FIRST_COMMIT, f"{path.relative_to(ROOT)}: date {text}"


# --- the overview figure ------------------------------------------------------------------------------------------

def _make_overview():
    spec = importlib.util.spec_from_file_location("make_overview", ROOT / "docs/figures/make_overview.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_demo_run(run: Path, val_ann: Path) -> Path:
    (run / "train").mkdir(parents=True)
    (run / "train" / "config.yaml").write_text(yaml.safe_dump({"data": {"root": "", "val_ann": str(val_ann)}}))
    rng = np.random.default_rng(0)
    for name, (h, w) in (("topology_mpii.png", (60, 50)), ("adjacency.png", (40, 90)), ("predictions.png", (50, 80))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(run / name)
    return run


def test_overview_command_in_readme_composes_a_generated_run(tmp_path, monkeypatch, synthetic_coco):
    words = shlex.split(re.search(r"python docs/figures/make_overview\.py ([^`]*)`", README.read_text()).group(1))
    run = Path(words[words.index("--run") + 1])
    monkeypatch.chdir(tmp_path)
    _fake_demo_run(run, synthetic_coco / "annotations" / "person_keypoints_val.json")
    out = tmp_path / "overview.png"
    assert _make_overview().main([*words, "--out", str(out)]) == 0
    figure = np.asarray(Image.open(out))
    assert figure.shape[1] > 2 * figure.shape[0]  # three panels side by side


def test_overview_refuses_a_run_on_real_data(tmp_path, synthetic_coco):
    coco = json.loads((synthetic_coco / "annotations" / "person_keypoints_val.json").read_text())
    coco["info"] = {"description": "COCO 2017 Dataset"}
    real = tmp_path / "real.json"
    real.write_text(json.dumps(coco))
    run = _fake_demo_run(tmp_path / "run", real)
    with pytest.raises(ValueError, match="not the project's generated people"):
        _make_overview().compose(run, tmp_path / "overview.png")
    assert not (tmp_path / "overview.png").exists()


def test_dataclass_defaults_reach_the_config_reference():
    # Every field of every config section is in docs/training.md's reference (a new key must be documented).
    documented = " ".join(" ".join(cells) for cells in table_rows((ROOT / "docs/training.md").read_text()))
    config = TrainConfig()
    missing = [f"{s.name}.{f.name}" for s in dataclasses.fields(config)
               for f in dataclasses.fields(getattr(config, s.name)) if f"`{s.name}.{f.name}`" not in documented]
    assert not missing, f"docs/training.md's config reference lacks {missing}"
