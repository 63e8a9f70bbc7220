"""ONNX Runtime inference: ``Predictor("model.onnx")`` and ``dspose predict --weights model.onnx`` give the
PyTorch path's keypoints (same crop, flip test, decode) on the shipped weights and real COCO val images, with the
skeleton and codec read from the file; what an ONNX file cannot do is refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dspose_graph.cli.main import main
from dspose_graph.export import OnnxModel, export_checkpoint, export_onnx
from dspose_graph.predict import Predictor
from dspose_graph.weights import resolve_weights

SHIPPED = "dspose_t_synthetic"
PX = 0.05  # keypoints of the two runtimes agree to this (image pixels)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path, diff, _ = export_checkpoint(SHIPPED, tmp_path_factory.mktemp("onnx") / "shipped.onnx")
    assert diff is not None and diff <= 1e-4
    return path


@pytest.fixture(scope="module")
def val_people(coco_mini) -> list[tuple[object, list[list[float]]]]:
    """Real COCO val images (never seen by the shipped weights, trained on generated people) with their boxes."""
    ann = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    boxes: dict[int, list[list[float]]] = {}
    for a in ann["annotations"]:
        if a["num_keypoints"] >= 5 and not a["iscrowd"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    chosen = sorted(boxes)[:6]
    return [(coco_mini / "images" / "val" / files[i], boxes[i]) for i in chosen]


def _all(predictor: Predictor, people) -> tuple[np.ndarray, np.ndarray]:
    out = [p for image, boxes in people for p in predictor.predict(image, boxes)]
    return np.stack([p["keypoints"] for p in out]), np.array([p["score"] for p in out])


@pytest.mark.parametrize("flip_test", [True, False])
def test_onnx_predictor_equals_pytorch_on_hidden_images(onnx_file, val_people, flip_test):
    torch_kp, torch_score = _all(Predictor(SHIPPED, flip_test=flip_test), val_people)
    onnx_kp, onnx_score = _all(Predictor(onnx_file, flip_test=flip_test), val_people)
    assert torch_kp.shape[0] >= 8
    assert np.abs(onnx_kp[..., :2] - torch_kp[..., :2]).max() <= PX
    np.testing.assert_allclose(onnx_kp[..., 2], torch_kp[..., 2], atol=1e-4)
    np.testing.assert_allclose(onnx_score, torch_score, atol=1e-4)


def test_onnx_file_carries_the_checkpoint_skeleton_sizes_and_codec(onnx_file):
    pt, ox = Predictor(SHIPPED), Predictor(onnx_file)
    assert ox.model is None and isinstance(ox.runner, OnnxModel)
    assert ox.schema == pt.schema
    assert ox.codec.name == pt.codec.name
    assert (ox.input_size, ox.heatmap_size) == (tuple(pt.input_size), tuple(pt.heatmap_size))
    assert ox.flip_index.tolist() == pt.flip_index.tolist()


def test_cli_predict_with_an_onnx_file_writes_the_pytorch_results(onnx_file, val_people, tmp_path, capsys):
    image, boxes = val_people[0]
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 1.0} for b in boxes]
    coco = {"images": [{"id": 1, "file_name": image.name}], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    results = {}
    for name, weights in (("pt", SHIPPED), ("onnx", str(onnx_file))):
        assert main(["predict", "--weights", weights, "--images", str(image), "--boxes", str(tmp_path / "dets.json"),
                     "--coco-json", str(tmp_path / "coco.json"), "--out", str(tmp_path / name)]) == 0
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    capsys.readouterr()
    assert len(results["onnx"]) == len(results["pt"]) == len(boxes)
    for a, b in zip(results["onnx"], results["pt"]):
        ka, kb = np.reshape(a["keypoints"], (-1, 3)), np.reshape(b["keypoints"], (-1, 3))
        assert np.abs(ka[:, :2] - kb[:, :2]).max() <= PX


def test_pytorch_fast_paths_are_refused_for_an_onnx_file(onnx_file):
    for options, named in (({"precision": "bf16"}, "precision=bf16"), ({"channels_last": True}, "channels_last"),
                           ({"compile": True}, "compile")):
        with pytest.raises(ValueError, match=named):
            Predictor(onnx_file, **options)


def test_onnx_file_without_codec_or_metadata_is_refused(tmp_path):
    predictor = Predictor(SHIPPED)
    old = export_onnx(predictor.model, tmp_path / "no_codec.onnx")  # codec not given: an export of before
    with pytest.raises(ValueError, match=r"no_codec.onnx: metadata has no 'dspose.codec'.*dspose export onnx"):
        Predictor(old)
    bare = onnx.load(str(old))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match=r"bare.onnx: metadata has no 'dspose.schema'"):
        Predictor(tmp_path / "bare.onnx")
    (tmp_path / "broken.onnx").write_bytes(resolve_weights(SHIPPED).read_bytes()[:4096])
    with pytest.raises(ValueError, match="broken.onnx: onnxruntime cannot load it"):
        Predictor(tmp_path / "broken.onnx")


def test_bench_onnx_prints_onnxruntime_against_eager_and_the_fastest_pytorch_path(capsys):
    from dspose_graph.benchmarks import available, run_benchmark

    argv = ["--weights", SHIPPED, "--batch", "2", "--threads", "1", "--rounds", "1", "--warmup", "0"]
    assert run_benchmark(available()["onnx"], argv) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines()
            if line.startswith(("pytorch ", "onnxruntime fp32 "))}
    assert set(rows) == {"pytorch fp32", "pytorch bf16+channels_last", "onnxruntime fp32"}
    assert all(float(line.split()[-2]) > 0 for line in rows.values())  # images/s
    assert "onnxruntime vs PyTorch eager:" in out and "vs the fastest PyTorch path (pytorch " in out
