"""Checkpoint files: round trip, corrupt/truncated/foreign files refused clearly, full disk leaves no damage."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from dspose_graph.models import checkpoint as ckpt
from dspose_graph.models.checkpoint import load_checkpoint, previous_path, save_checkpoint
from dspose_graph.train.rng import rng_state, set_rng_state


def _state(value: float = 1.0) -> dict:
    return {"model": {"name": "dspose_t", "config": {"t": 4}}, "schema": {"name": "coco"},
            "state_dict": {"w": torch.full((64, 64), value)}, "epoch": 3, "metrics": {"AP": 0.5},
            "provenance": {"seed": 0}}


def test_round_trip_and_previous_kept(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((64, 64), 2.0))
    assert torch.equal(load_checkpoint(previous_path(path))["state_dict"]["w"], torch.full((64, 64), 1.0))
    state = load_checkpoint(path)
    assert state["format"] == "dspose-graph" and state["format_version"] == 1 and state["metrics"] == {"AP": 0.5}


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {**_state(), "rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_truncated_checkpoint_is_a_clear_error_naming_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"last\.pt: corrupt or truncated.*last\.pt\.prev"):
        load_checkpoint(path)
    assert torch.equal(load_checkpoint(previous_path(path))["state_dict"]["w"], torch.full((64, 64), 1.0))


def test_garbage_and_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pt: corrupt or truncated"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a dspose-graph checkpoint"):
        load_checkpoint(foreign)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"format": "dspose-graph", "format_version": 1, "model": {}}, incomplete)
    with pytest.raises(ValueError, match="incomplete.pt: checkpoint has no 'schema'"):
        load_checkpoint(incomplete)
    future = tmp_path / "future.pt"
    torch.save({**_state(), "format": "dspose-graph", "format_version": 99}, future)
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(future)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "dspose-graph", "payload": object()}, path)  # not loadable with weights_only
    with pytest.raises(ValueError, match="evil.pt: not a dspose-graph checkpoint: an intact torch.save file holding pickled Python objects \\(first found: object\\)"):
        load_checkpoint(path)


def test_disk_full_mid_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    before = path.read_bytes()
    real_save = torch.save

    def save_then_disk_full(obj, f, *args, **kwargs):
        # Write part of the real bytes, then fail as a full disk does.
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 3)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", save_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((64, 64), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_inference_record_and_old_checkpoints_without_one(tmp_path):
    from dspose_graph.models import create_model
    from dspose_graph.models.checkpoint import checkpoint_state, inference_spec, load_model
    from dspose_graph.weights import shipped_path

    torch.manual_seed(0)
    model = create_model("dspose_t", schema="lsp")
    save_checkpoint(tmp_path / "new.pt", checkpoint_state(model, codec="udp", epoch=2))
    loaded, state = load_model(tmp_path / "new.pt")
    assert state["model"]["name"] == "dspose_t" and loaded.schema.name == "lsp" and not loaded.training
    assert state["inference"] == {"input_size": [96, 128], "heatmap_size": [24, 32], "codec": "udp"}
    assert inference_spec(state, loaded) == ckpt.InferenceSpec((96, 128), (24, 32), "udp")
    # Older checkpoints decode as they were trained: a record with the udp flag, or no record and the stored
    # training config's data.codec / data.udp; with neither, the pre-codec default (HRNet's conventions).
    old = {k: v for k, v in state.items() if k != "inference"}
    legacy_record = {"input_size": [96, 128], "heatmap_size": [24, 32], "udp": True}
    assert inference_spec({**old, "inference": legacy_record}, loaded).codec == "udp"
    assert inference_spec({**old, "inference": {**legacy_record, "udp": False}}, loaded).codec == "hrnet"
    assert inference_spec({**old, "config": {"data": {"udp": True}}}, loaded).codec == "udp"
    assert inference_spec({**old, "config": {"data": {"codec": "tokenpose"}}}, loaded).codec == "tokenpose"
    assert inference_spec(old, loaded) == ckpt.InferenceSpec((96, 128), (24, 32), "hrnet")
    shipped, shipped_state = load_model(shipped_path("dspose_t_synthetic"))
    assert "inference" not in shipped_state and inference_spec(shipped_state, shipped).input_size == (96, 128)
    assert inference_spec(shipped_state, shipped).codec == "hrnet"


def test_checkpoint_default_codec_is_the_data_default():
    from dspose_graph.data.codec import DEFAULT_CODEC

    assert ckpt.DEFAULT_CODEC == DEFAULT_CODEC


def test_load_model_refuses_a_checkpoint_whose_config_builds_no_model(tmp_path):
    from dspose_graph.models.checkpoint import load_model

    save_checkpoint(tmp_path / "bad.pt", {**_state(), "model": {"name": "dspose_t", "config": {"depth_typo": 4}},
                                          "schema": {"name": "k2", "keypoints": ["a", "b"], "skeleton": [],
                                                     "flip_pairs": []}})
    with pytest.raises(ValueError, match=r"bad\.pt: checkpoint field 'model.config'.*depth_typo"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.parametrize("hard_links", [True, False])
def test_link_or_copy_stages_then_renames_with_or_without_hard_links(tmp_path, monkeypatch, hard_links):
    from dspose_graph.models.checkpoint import link_or_copy

    src = tmp_path / "last.pt"
    src.write_bytes(b"state")
    if not hard_links:
        def no_link(*args):
            raise OSError("hard links not supported")
        monkeypatch.setattr("os.link", no_link)
    dst = link_or_copy(src, tmp_path / "epoch_0001.pt")
    assert dst.read_bytes() == b"state" and src.read_bytes() == b"state"
    assert (dst.stat().st_ino == src.stat().st_ino) == hard_links
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.pt", "last.pt"]  # no staging file left
