"""ONNX export: onnxruntime equals PyTorch on real image crops, dynamic batch, metadata, top-t margin."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from dspose_graph.cli.main import main
from dspose_graph.data import load_image
from dspose_graph.export import compare_onnx, export_onnx, run_onnx, top_t_margin
from dspose_graph.predict import Predictor
from dspose_graph.topology.schemas import KeypointSchema

ATOL = 1e-4


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, make_checkpoint) -> Predictor:
    return Predictor(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "dspose_t.pt", seed=3), flip_test=False)


@pytest.fixture(scope="module")
def onnx_file(predictor, tmp_path_factory):
    return export_onnx(predictor.model, tmp_path_factory.mktemp("onnx") / "dspose_t.onnx")


@pytest.fixture(scope="module")
def real_crops(predictor, coco_mini, data_root) -> torch.Tensor:
    """Person crops from real COCO val images (GT boxes) and an MPII fixture image."""
    ann = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    people = [a for a in ann["annotations"] if a["num_keypoints"] >= 8 and not a["iscrowd"]][:5]
    crops = [predictor.crop(load_image(coco_mini / "images" / "val" / files[a["image_id"]]), np.array([a["bbox"]]))[0]
             for a in people]
    mpii = load_image(data_root / "mmpose_fixtures" / "mpii" / "004645041.jpg")
    crops.append(predictor.crop(mpii, np.array([[0.0, 0.0, mpii.shape[1], mpii.shape[0]]]))[0])
    return torch.cat(crops)


def test_onnxruntime_equals_pytorch_on_real_images(onnx_file, predictor, real_crops):
    diff = compare_onnx(onnx_file, predictor.model, real_crops)
    print(f"max |onnxruntime - PyTorch| on {real_crops.shape[0]} real crops: {diff:.3e}")
    assert diff < ATOL
    # Dynamic batch: one crop alone gives the same maps as inside the batch.
    single = run_onnx(onnx_file, real_crops[2:3])
    np.testing.assert_allclose(single, run_onnx(onnx_file, real_crops)[2:3], atol=ATOL)
    assert compare_onnx(onnx_file, predictor.model, real_crops[:1]) < ATOL
    # The agreement holds because no top-t choice on these crops is decided by float rounding: the t-th and
    # (t+1)-th cosine similarities (at most 1 in size) lie more than 4 float32 ulps of 1 apart, where the two
    # runtimes' similarities differ by about one. The margin depends on the torch build's kernels: 5.96e-7 with
    # torch 2.3.1 (5 ulps), and the test printed it with 2.14.1 below.
    margin = top_t_margin(predictor.model, real_crops)
    print(f"smallest top-t margin with torch {torch.__version__}: {margin:.3e}")
    assert margin > 4 * torch.finfo(torch.float32).eps


def test_top_t_margin_only_for_graph_heads(real_crops):
    from dspose_graph.models import create_model

    assert top_t_margin(create_model("tokenpose_t"), real_crops[:1]) is None
    model = create_model("dspose_t", t=17)  # every edge kept: no (t+1)-th neighbour, nothing to flip
    assert top_t_margin(model, real_crops[:1]) is None


def test_onnx_file_carries_schema_and_preprocessing(onnx_file, predictor):
    proto = onnx.load(str(onnx_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert KeypointSchema.from_dict(json.loads(meta["dspose.schema"])) == predictor.schema
    assert json.loads(meta["dspose.input_size"]) == list(predictor.input_size)
    assert json.loads(meta["dspose.heatmap_size"]) == list(predictor.heatmap_size)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    w, h = predictor.input_size
    assert run_onnx(onnx_file, torch.zeros(3, 3, h, w)).shape == (3, 17, predictor.heatmap_size[1], predictor.heatmap_size[0])


def test_export_bad_input(predictor, tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(predictor.model, tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        run_onnx(tmp_path / "nope.onnx", torch.zeros(1, 3, 128, 96))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_export(tmp_path, coco_mini, capsys, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "t.pt", seed=1)
    out = tmp_path / "m.onnx"
    rc = main(["export", "onnx", "--weights", str(ckpt), "--out", str(out),
               "--check-image", str(coco_mini / "images" / "val" / "000000000139.jpg")])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "max |onnxruntime - PyTorch| on 000000000139.jpg" in text
    rc = main(["export", "onnx", "--weights", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert rc == 2 and "missing.pt" in capsys.readouterr().err
