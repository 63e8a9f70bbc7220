"""Training configs: YAML round trips, strict key/type checking naming key and file, --set overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from dspose_graph.train.config import (TrainConfig, apply_override, config_from_dict, config_to_dict, config_to_yaml,
                                     load_config)

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
BASES = sorted((EXPERIMENTS_DIR / "base").glob("*.yaml"))


def test_defaults_are_the_paper_schedule():
    c = TrainConfig()
    assert (c.optim.lr, c.optim.milestones, c.optim.gamma, c.optim.epochs, c.optim.batch_size) == \
        (1e-3, [200, 260], 0.1, 300, 32)


def test_round_trip_dataclass_yaml_dataclass(tmp_path):
    c = TrainConfig()
    c.model.name = "dspose_t"
    c.model.overrides = {"graph_layers": 1, "topk": 3}
    c.data.input_size = [96, 128]
    c.optim.precision = "bf16"
    c.paper.value = 75.1
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(c))
    back = load_config(path)
    assert back == c
    assert config_to_yaml(back) == config_to_yaml(c)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_experiment_yaml_loads_and_round_trips(path):
    c = load_config(path)
    assert config_from_dict(yaml.safe_load(config_to_yaml(c))) == c
    assert c.paper.table, f"{path.name} has no paper.table"


def test_experiments_exist():
    assert len(EXPERIMENTS) >= 20


@pytest.mark.parametrize("path", BASES, ids=[p.stem for p in BASES])
def test_every_base_file_loads_and_is_not_a_row(path):
    c = load_config(path)
    assert not c.paper.table and c.data.kind == path.stem


def test_rows_state_only_what_differs_from_their_base():
    for path in EXPERIMENTS:
        raw = yaml.safe_load(path.read_text())
        if "base" not in raw:
            continue
        base = yaml.safe_load((path.parent / raw["base"]).read_text())
        assert "data" not in raw and "optim" not in raw, f"{path.name} repeats its base's data/optim block"
        assert raw.get("model", {}).get("name") != base["model"]["name"], f"{path.name} repeats the base's model"


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.001\n  lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*optim.*'lerning_rate'"):
        load_config(path)


def test_unknown_section_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer:\n  lr: 0.001\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'optimizer'"):
        load_config(path)


@pytest.mark.parametrize("text,key", [
    ("optim:\n  epochs: ten\n", "optim.epochs"),
    ("optim:\n  epochs: 1.5\n", "optim.epochs"),
    ("optim:\n  lr: fast\n", "optim.lr"),
    ("run:\n  deterministic: 1\n", "run.deterministic"),
    ("optim:\n  milestones: 200\n", "optim.milestones"),
    ("optim:\n  milestones: [200, x]\n", "optim.milestones[1]"),
    ("model:\n  overrides: [1]\n", "model.overrides"),
    ("data: 3\n", "data"),
])
def test_wrong_type_names_key_and_file(tmp_path, text, key):
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert "typo.yaml" in str(e.value) and key in str(e.value)


def test_int_is_accepted_for_float_and_stored_as_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1\n")
    assert load_config(path).optim.lr == 1.0 and isinstance(load_config(path).optim.lr, float)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("optim: [\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        load_config(path)


def test_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.001\n")
    c = load_config(path, ["optim.lr=5e-4", "optim.milestones=[3, 4]", "run.deterministic=true",
                           "model.overrides.topk=3", "run.out_dir=runs/x.y"])
    assert c.optim.lr == 5e-4 and c.optim.milestones == [3, 4] and c.run.deterministic is True
    assert c.model.overrides == {"topk": 3} and c.run.out_dir == "runs/x.y"


@pytest.mark.parametrize("item,match", [
    ("optim.lr", "KEY=VALUE"),
    ("lr=0.1", "SECTION.FIELD"),
    ("optim.lrr=0.1", "'lrr'"),
    ("optim.epochs=many", "optim.epochs"),
])
def test_bad_set_overrides(tmp_path, item, match):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ValueError, match=match):
        load_config(path, [item])


def test_apply_override_does_not_mutate_input():
    raw = {"optim": {"lr": 0.1}}
    apply_override(raw, "optim.lr=0.2")
    assert raw == {"optim": {"lr": 0.1}}


def test_config_to_dict_is_plain():
    d = config_to_dict(TrainConfig())
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)}


# --- base: files ------------------------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_merges_mappings_and_the_row_wins(tmp_path):
    _write(tmp_path / "base" / "b.yaml", "model:\n  name: dspose_b\n  overrides: {t: 4, conv: gat}\n"
           "optim:\n  lr: 0.002\n  milestones: [200, 260]\n  epochs: 300\ndata:\n  kind: coco\n  root: data/coco\n")
    row = _write(tmp_path / "row.yaml", "base: base/b.yaml\nmodel:\n  overrides: {t: 3}\n"
                 "optim:\n  milestones: [5]\n  epochs: 10\n")
    c = load_config(row)
    assert c.model.name == "dspose_b" and c.model.overrides == {"t": 3, "conv": "gat"}  # mappings merge key by key
    assert c.optim.milestones == [5] and c.optim.epochs == 10 and c.optim.lr == 0.002  # lists replaced, rest kept
    assert c.data.root == "data/coco"
    expected = config_from_dict({"model": {"name": "dspose_b", "overrides": {"t": 3, "conv": "gat"}},
                                 "optim": {"lr": 0.002, "milestones": [5], "epochs": 10},
                                 "data": {"kind": "coco", "root": "data/coco"}})
    assert c == expected


def test_base_chain_is_recursive_and_relative_to_each_file(tmp_path):
    _write(tmp_path / "a" / "root.yaml", "optim:\n  lr: 0.1\n  epochs: 7\nrun:\n  seed: 1\n")
    _write(tmp_path / "a" / "b" / "mid.yaml", "base: ../root.yaml\noptim:\n  lr: 0.2\n")
    row = _write(tmp_path / "rows" / "row.yaml", "base: ../a/b/mid.yaml\nrun:\n  seed: 3\n")
    c = load_config(row, ["optim.epochs=9"])
    assert (c.optim.lr, c.optim.epochs, c.run.seed) == (0.2, 9, 3)  # nearest file wins, --set wins over all


def test_a_null_in_the_row_replaces_the_base_value(tmp_path):
    _write(tmp_path / "b.yaml", "paper:\n  value: 75.1\n  params_m: 13.5\n")
    row = _write(tmp_path / "row.yaml", "base: b.yaml\npaper:\n  value: null\n")
    c = load_config(row)
    assert c.paper.value is None and c.paper.params_m == 13.5


@pytest.mark.parametrize("names", [("x.yaml", "x.yaml"), ("x.yaml", "y.yaml", "x.yaml")])
def test_base_cycle_names_the_files(tmp_path, names):
    for here, there in zip(names, names[1:]):
        _write(tmp_path / here, f"base: {there}\noptim:\n  lr: 0.1\n")
    with pytest.raises(ValueError, match="cycle") as e:
        load_config(tmp_path / names[0])
    for name in set(names):
        assert name in str(e.value)


def test_missing_base_names_both_files(tmp_path):
    row = _write(tmp_path / "row.yaml", "base: base/nowhere.yaml\n")
    with pytest.raises(ValueError) as e:
        load_config(row)
    assert "row.yaml" in str(e.value) and "nowhere.yaml" in str(e.value)


@pytest.mark.parametrize("value", ["''", "3", "[a.yaml]"])
def test_bad_base_value_names_the_file(tmp_path, value):
    row = _write(tmp_path / "row.yaml", f"base: {value}\n")
    with pytest.raises(ValueError, match=r"row\.yaml.*base must be a path"):
        load_config(row)


@pytest.mark.parametrize("where", ["base", "row"])
def test_unknown_key_names_the_file_that_holds_it(tmp_path, where):
    good, bad = "optim:\n  lr: 0.1\n", "optim:\n  lerning_rate: 0.1\n"
    _write(tmp_path / "base" / "b.yaml", bad if where == "base" else good)
    row = _write(tmp_path / "row.yaml", "base: base/b.yaml\n" + (bad if where == "row" else good))
    with pytest.raises(ValueError, match="'lerning_rate'") as e:
        load_config(row)
    holder = tmp_path / ("base/b.yaml" if where == "base" else "row.yaml")
    assert str(e.value).startswith(f"{holder}: ")


def test_wrong_type_in_a_base_names_the_base(tmp_path):
    _write(tmp_path / "b.yaml", "optim:\n  epochs: ten\n")
    row = _write(tmp_path / "row.yaml", "base: b.yaml\n")
    with pytest.raises(ValueError, match=r"b\.yaml: optim\.epochs"):
        load_config(row)


@pytest.mark.parametrize("how", ["yaml", "set"])
def test_old_precision_key_is_refused_naming_the_new_one(tmp_path, how):
    row = _write(tmp_path / "row.yaml", "optim:\n  amp: none\n" if how == "yaml" else "optim:\n  lr: 0.1\n")
    with pytest.raises(ValueError, match=r"optim.amp was renamed optim.precision.*precision: fp32 for amp: none"):
        load_config(row, ["optim.amp=bf16"] if how == "set" else None)
