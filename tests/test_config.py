"""Training configs: YAML round trips, strict key/type checking naming key and file, --set overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from dspose_graph.train.config import (TrainConfig, apply_override, config_from_dict, config_to_dict, config_to_yaml,
                                     load_config)

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_defaults_are_the_paper_schedule():
    c = TrainConfig()
    assert (c.optim.lr, c.optim.milestones, c.optim.gamma, c.optim.epochs, c.optim.batch_size) == \
        (1e-3, [200, 260], 0.1, 300, 32)


def test_round_trip_dataclass_yaml_dataclass(tmp_path):
    c = TrainConfig()
    c.model.name = "dspose_t"
    c.model.overrides = {"graph_layers": 1, "topk": 3}
    c.data.input_size = [96, 128]
    c.optim.amp = "bf16"
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
