"""Fast paths (precision, channels-last, compile) through each entry point, against fp32 eager.

Entry points: ``Predictor``, ``dspose predict``, the pipeline's ``evaluate(config, weights)`` (``eval.*`` keys,
the same evaluator that runs inside training) and ``dspose export`` (which refuses them). Accuracy is checked
on the shipped trained ``dspose_t`` (in the repository, so a fresh clone runs these): on a random model the
heatmaps are flat and any rounding moves the decoded maximum anywhere. Wiring is checked on a random
``make_checkpoint`` model. Also: Predictor and the dataset build the same centre and scale for a detected box.

Tolerances (image pixels of 192x256 generated images, persons ~100-200 px tall):
bf16 keypoints move <= 0.25 px on average and <= 8 px (about one heatmap pixel) at most: near-tied peaks may swap; channels-last <= 1e-3 px;
compile <= 1e-2 px (fp32 maths, other kernels); evaluation PCK@0.2: bf16 within 2 points, channels-last equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dspose_graph.cli.main import main
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.data.codec import CODECS
from dspose_graph.io import read_json
from dspose_graph.predict import Predictor
from dspose_graph.train.config import config_from_dict
from dspose_graph.train.pipeline import evaluate
from dspose_graph.weights import shipped_path

SHIPPED = shipped_path("dspose_t_synthetic")


@pytest.fixture(scope="module")
def persons(synthetic_coco) -> list[tuple[Path, list[list[float]]]]:
    """(image file, ground-truth person boxes) of the first 6 generated val images."""
    coco = read_json(synthetic_coco / "annotations" / "person_keypoints_val.json", "test set")
    boxes: dict[int, list[list[float]]] = {}
    for ann in coco["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    return [(synthetic_coco / "images" / "val" / im["file_name"], boxes[im["id"]])
            for im in coco["images"] if im["id"] in boxes][:6]


def _keypoints(predictor: Predictor, persons) -> np.ndarray:
    return np.concatenate([np.stack([p["keypoints"] for p in predictor.predict(f, b)]) for f, b in persons])


@pytest.fixture(scope="module")
def reference(persons) -> np.ndarray:
    return _keypoints(Predictor(SHIPPED), persons)


def _moves(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)


def test_predictor_bf16_keypoints_stay_close(persons, reference):
    for channels_last in (False, True):
        got = _keypoints(Predictor(SHIPPED, precision="bf16", channels_last=channels_last), persons)
        moved = _moves(got, reference)
        assert moved.mean() <= 0.25 and moved.max() <= 8.0, (channels_last, moved.mean(), moved.max())
        assert np.abs(got[..., 2] - reference[..., 2]).max() <= 0.05


def test_predictor_channels_last_equals_fp32(persons, reference):
    predictor = Predictor(SHIPPED, channels_last=True)
    conv = next(m for m in predictor.model.modules() if m.__class__.__name__ == "Conv2d")
    assert predictor.runner.channels_last and conv.weight.is_contiguous(memory_format=__import__("torch").channels_last)
    assert _moves(_keypoints(predictor, persons), reference).max() <= 1e-3


@pytest.mark.slow
def test_predictor_compile_equals_fp32(persons, reference):
    predictor = Predictor(SHIPPED, compile=True)
    assert predictor.runner.compiled and predictor.runner.frozen  # loaded weights never change: frozen
    assert _moves(_keypoints(predictor, persons[:2]), reference[:sum(len(b) for _, b in persons[:2])]).max() <= 1e-2


def test_fp16_on_cpu_is_refused_naming_the_option(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        Predictor(ckpt, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Predictor(ckpt, precision="fp8")
    image = tmp_path / "in"
    image.mkdir()
    assert main(["predict", "--weights", str(ckpt), "--images", str(image), "--out", str(tmp_path / "o"),
                 "--precision", "fp16"]) == 2
    assert "--precision fp16" in capsys.readouterr().err


def test_cli_flags_reach_the_predictor(persons, tmp_path, capsys):
    """``dspose predict --precision bf16 --channels-last`` writes what ``Predictor(bf16, channels_last)`` returns."""
    image, boxes = persons[0]
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / image.name).write_bytes(image.read_bytes())
    det = tmp_path / "boxes.json"
    det.write_text(json.dumps([{"image_id": int(image.stem), "bbox": b, "score": 1.0, "category_id": 1} for b in boxes]))
    results = {}
    for flags in ([], ["--precision", "bf16", "--channels-last"]):
        out = tmp_path / ("fast" if flags else "fp32")
        assert main(["predict", "--weights", str(SHIPPED), "--images", str(folder), "--boxes", str(det),
                     "--out", str(out), *flags]) == 0
        results[bool(flags)] = np.array([r["keypoints"] for r in read_json(out / "results.json", "results")])
    fast = Predictor(SHIPPED, precision="bf16", channels_last=True).predict(image, boxes)
    expected = np.stack([p["keypoints"] for p in fast]).reshape(len(boxes), -1)
    np.testing.assert_allclose(results[True], expected, atol=1e-3)
    assert np.abs(results[True] - results[False]).max() > 0  # the flags changed the computation


def _eval_config(root: Path, out: Path, **eval_keys) -> object:
    return config_from_dict({
        "model": {"name": "dspose_t"},
        "data": {"kind": "coco", "root": str(root), "val_ann": "annotations/person_keypoints_val.json",
                 "val_images": "images/val", "train_ann": "annotations/person_keypoints_train.json",
                 "train_images": "images/train"},
        "eval": {"batch_size": 8, **eval_keys},
        "run": {"out_dir": str(out), "device": "cpu", "workers": 0, "progress": False, "tensorboard": False},
    })


def test_evaluate_fast_paths_against_fp32(synthetic_coco, tmp_path):
    ref = evaluate(_eval_config(synthetic_coco, tmp_path / "a"), SHIPPED)
    cl = evaluate(_eval_config(synthetic_coco, tmp_path / "b", channels_last=True), SHIPPED)
    bf16 = evaluate(_eval_config(synthetic_coco, tmp_path / "c", precision="bf16", channels_last=True), SHIPPED)
    assert ref["PCK@0.2"] > 50  # a trained model: the comparison means something
    assert cl["PCK@0.2"] == pytest.approx(ref["PCK@0.2"], abs=1e-9)
    assert abs(bf16["PCK@0.2"] - ref["PCK@0.2"]) <= 2.0 and abs(bf16["AP"] - ref["AP"]) <= 0.1


def _record_preparations(monkeypatch) -> list[dict]:
    """Record the options of every ``prepare_model`` call of the pipeline and trainer (compiling skipped)."""
    from dspose_graph.models import runtime
    from dspose_graph.train import pipeline, trainer

    calls: list[dict] = []
    monkeypatch.setattr(runtime.torch, "compile", lambda m, **kw: m)  # the options are under test, not inductor

    def recording(model, device="cpu", precision="fp32", **options):
        calls.append({"precision": precision, **options})
        return runtime.prepare_model(model, device, precision, **options)

    monkeypatch.setattr(pipeline, "prepare_model", recording)
    monkeypatch.setattr(trainer, "prepare_model", recording)
    return calls


def test_evaluating_a_checkpoint_freezes_and_training_does_not(synthetic_coco, tmp_path, monkeypatch):
    """eval.compile freezes the weights of a saved checkpoint only; run.* options reach the training model."""
    from dspose_graph.train.pipeline import train

    calls = _record_preparations(monkeypatch)
    evaluate(_eval_config(synthetic_coco, tmp_path / "e", compile=True), SHIPPED)
    assert calls == [{"precision": "fp32", "channels_last": False, "compile": True, "freeze": True}]
    calls.clear()
    config = _eval_config(synthetic_coco, tmp_path / "t", compile=True, every=1)
    config.optim.epochs, config.optim.batch_size = 1, 8
    config.optim.precision, config.run.channels_last, config.run.compile = "bf16", True, True
    train(config)
    # The trainer's model (run.compile compiles it after DDP wrapping, in trainer.compile_model, not here).
    assert calls == [{"precision": "bf16", "channels_last": True},
                     {"precision": "fp32", "channels_last": False, "compile": True, "freeze": False}]  # its evaluator


def test_eval_config_keys_are_checked(synthetic_coco, tmp_path):
    with pytest.raises(ValueError, match=r"config eval.precision: precision 'fp16' needs a CUDA device"):
        evaluate(_eval_config(synthetic_coco, tmp_path, precision="fp16"), SHIPPED)
    with pytest.raises(ValueError, match=r"eval.channels_last: expected true/false"):
        _eval_config(synthetic_coco, tmp_path, channels_last="yes")
    cli = tmp_path / "c.yaml"
    cli.write_text("eval: {precision: fp16}\nrun: {device: cpu}\n")
    assert main(["train", str(cli), "--eval-only", "--resume", str(SHIPPED)]) == 2


@pytest.mark.parametrize("flag, option", [(["--precision", "bf16"], "--precision bf16"),
                                          (["--channels-last"], "--channels-last"), (["--compile"], "--compile")])
def test_export_refuses_what_onnx_cannot_carry(make_checkpoint, tmp_path, capsys, flag, option):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main(["export", "onnx", "--weights", str(ckpt), "--out", str(tmp_path / "m.onnx"), *flag]) == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_predictor_and_dataset_centre_a_detection_alike(synthetic_coco, make_checkpoint, tmp_path, codec):
    """The same detected box (inside, crossing the border, fractional) gets the same centre and scale."""
    from dspose_graph.models import create_model
    from dspose_graph.models.checkpoint import checkpoint_state, save_checkpoint

    ann = synthetic_coco / "annotations" / "person_keypoints_val.json"
    coco = read_json(ann, "test set")
    image = coco["images"][0]
    boxes = [[10.0, 20.0, 60.0, 150.0], [-12.5, 30.25, 90.0, 260.0], [150.2, 3.7, 55.1, 99.9]]
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": image["id"], "category_id": 1, "bbox": b, "score": 0.9} for b in boxes]))
    model = create_model("dspose_t")
    ckpt = save_checkpoint(tmp_path / "m.pt", checkpoint_state(model, name="dspose_t", codec=codec))
    predictor = Predictor(ckpt)
    assert predictor.codec.name == codec
    dataset = CocoKeypointDataset(ann, synthetic_coco / "images" / "val", detections=det, codec=codec,
                                  input_size=model.input_size, heatmap_size=model.heatmap_size)
    records = [r for r in dataset.records if r.image_id == image["id"]]
    pixels = np.zeros((image["height"], image["width"], 3), np.uint8)
    _, centers, scales = predictor.crop(pixels, np.asarray(boxes))
    np.testing.assert_allclose(centers, np.stack([r.center for r in records]), atol=1e-12)
    np.testing.assert_allclose(scales, np.stack([r.scale for r in records]), atol=1e-12)
    if codec == "tokenpose":  # TokenPose's _xywh2cs: centre x + (w - 1) / 2, unclipped
        np.testing.assert_allclose(centers[1], [-12.5 + 89.0 / 2, 30.25 + 259.0 / 2])
