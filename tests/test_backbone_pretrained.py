"""``HRNetStage3(pretrained=PATH)`` on files the tests write: timm layout, official HRNet/TokenPose layouts, errors."""

from __future__ import annotations

import pytest
import timm
import torch

from dspose_graph.models.backbone import HRNetStage3

NAME = "hrnet_w18_small"

# Names official HRNet's code gives stage 1-3 tensors (lib/models/pose_hrnet.py, cls_hrnet.py): transition
# branch i kept is Sequential(conv, bn, relu), a new branch Sequential(Sequential(conv, bn, relu)); fuse layer
# [i][j] is Sequential(conv, bn, upsample) for j > i and a Sequential of Sequential(conv, bn[, relu]) for j < i.
OFFICIAL_NAMES = (
    "conv1.weight", "bn2.running_var", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
    "transition1.0.0.weight", "transition1.1.0.0.weight", "transition2.2.0.0.weight",
    "stage2.0.branches.0.0.conv1.weight", "stage2.0.fuse_layers.0.1.0.weight", "stage2.0.fuse_layers.1.0.0.0.weight",
    "stage3.0.fuse_layers.2.0.1.0.weight", "stage3.0.fuse_layers.0.2.1.running_mean",
)


@pytest.fixture(scope="module")
def full_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(NAME, pretrained=False).state_dict()  # with stage 4 and the classifier


def assert_loaded(model: HRNetStage3, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    for k, v in model.net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(v, state[prefix + k], rtol=0, atol=0)


def test_timm_layout(tmp_path, full_state):
    path = tmp_path / "timm.pth"
    torch.save(full_state, path)
    model = HRNetStage3(NAME)
    report = model.load_pretrained(path)
    assert_loaded(model, full_state)
    assert report.prefix == "" and report.loaded == len(model.net.state_dict())
    assert report.ignored == len(full_state) - report.loaded > 0  # stage 4 + head counted, not loaded


def test_official_imagenet_layout(tmp_path, full_state):
    """An ImageNet file as HRNet-Image-Classification writes it: official names, no num_batches_tracked."""
    assert set(OFFICIAL_NAMES) <= set(full_state)
    official = {k: v for k, v in full_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "hrnet_w18_small_imagenet.pth"
    torch.save(official, path)
    model = HRNetStage3(NAME, pretrained=path)
    assert_loaded(model, official)


def test_official_tokenpose_checkpoint_layout(tmp_path, full_state):
    """A TokenPose pose checkpoint: DataParallel's module., the backbone under pre_feature., a transformer."""
    stage = HRNetStage3(NAME).net.state_dict()
    wrapped = {f"module.pre_feature.{k}": full_state[k] for k in stage}
    wrapped["module.transformer.keypoint_token"] = torch.zeros(1, 17, 192)
    path = tmp_path / "tokenpose.pth"
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    model = HRNetStage3(NAME)
    report = model.load_pretrained(path)
    assert_loaded(model, full_state)
    assert report.prefix == "pre_feature." and report.ignored == 1


def test_missing_and_mismatched_tensors_are_listed(tmp_path, full_state):
    partial = {k: v for k, v in full_state.items() if not k.startswith("stage3.0.branches.1.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth lacks \d+ of \d+ .*stage3\.0\.branches\.1\.0\.conv1\.weight"):
        HRNetStage3(NAME, pretrained=tmp_path / "partial.pth")
    torch.save(timm.create_model("hrnet_w18_small_v2", pretrained=False).state_dict(), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match=r"v2\.pth does not fit hrnet_w18_small: \d+ stage 1-3 tensors differ"):
        HRNetStage3(NAME, pretrained=tmp_path / "v2.pth")
    torch.save({"classifier.weight": torch.zeros(3)}, tmp_path / "head.pth")
    with pytest.raises(ValueError, match="hrnet_w32-36af842e.pth"):
        HRNetStage3(NAME, pretrained=tmp_path / "head.pth")
