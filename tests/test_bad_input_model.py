"""Model construction with bad sizes: one clear ValueError naming the field, from presets and from checkpoints."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dspose_graph.models import create_model, create_model_from_config
from dspose_graph.models.presets import check_config, resolve_config


@pytest.mark.parametrize("overrides,expected", [
    ({"dim": 0}, r"field 'dim' = 0 must be a positive integer"),
    ({"dim": -8}, r"field 'dim' = -8 must be a positive integer"),
    ({"heads": 0}, r"field 'heads' = 0 must be a positive integer"),
    ({"heads": -2}, r"field 'heads' = -2"),
    ({"heads": 5}, r"field 'dim' = 96 is not divisible by field 'heads' = 5"),
    ({"dim": 90, "heads": 2}, r"field 'dim' = 90 must be divisible by 4"),
    ({"dim": 96.0}, r"field 'dim' = 96.0 must be a positive integer"),
    ({"hidden_dim": 0}, r"field 'hidden_dim' = 0"),
    ({"head_layers": 0}, r"field 'head_layers' = 0"),
    ({"depths": ()}, r"field 'depths' = \(\) must be a non-empty list"),
    ({"depths": (2, 0)}, r"field 'depths' = \(2, 0\)"),
    ({"mlp_ratio": 0.0}, r"field 'mlp_ratio' = 0.0 must be a positive number"),
    ({"mlp_ratio": float("nan")}, r"field 'mlp_ratio' = nan"),
    ({"input_size": (0, 128)}, r"field 'input_size' = \(0, 128\) must be two positive integers"),
    ({"input_size": (96,)}, r"field 'input_size'"),
    ({"patch_size": (-3, 4)}, r"field 'patch_size' = \(-3, 4\)"),
    ({"a": 1.5}, r"field 'a' = 1.5 must be in \[0, 1\]"),
    ({"num_keypoints": 0}, r"num_keypoints = 0 must be a positive integer"),
    ({"num_keypoints": "17"}, r"num_keypoints = '17' must be a positive integer"),
])
def test_create_model_refuses_bad_sizes_naming_the_field(overrides, expected):
    with pytest.raises(ValueError, match=rf"model 'dspose_t': {expected}"):
        create_model("dspose_t", device="meta", **overrides)


@pytest.mark.parametrize("field,value", [("dim", 0), ("heads", 0), ("dim", -8), ("depths", [])])
def test_a_checkpoint_config_with_bad_sizes_is_refused_naming_the_field(field, value):
    config = dataclasses.asdict(resolve_config("dspose_t"))
    config[field] = value
    with pytest.raises(ValueError, match=rf"model 'dspose_t': field '{field}'"):
        create_model_from_config(config)


def test_every_preset_passes_the_check_and_builds():
    from dspose_graph.models import list_models

    for name in list_models():
        check_config(resolve_config(name))
    model = create_model("dspose_t", device="meta", dim=64, heads=4, depths=(1,))
    assert model.config.dim == 64 and model.encoder.out_dim == 64


def test_unknown_model_and_override_still_name_the_valid_choices():
    with pytest.raises(ValueError, match=re.escape("unknown model 'dspose_x'; valid: dspose_b")):
        create_model("dspose_x")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['width'\]"):
        create_model("dspose_t", width=3)
