"""The fidelity keys of a training config reach the pipeline: codec, augmentation preset, pretrained backbone,
detected person boxes with OKS-NMS and rescoring, and the global batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dspose_graph.data.augment import AUGMENT_PRESETS
from dspose_graph.models.backbone import HRNetStage3
from dspose_graph.train.config import config_from_dict, config_to_yaml, load_config
from dspose_graph.train.pipeline import (augment_of, build_dataset, build_evaluator, build_model, check_global_batch,
                                         dry_run, train)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _config(root: Path, out: Path, **sections) -> dict:
    raw = {"model": {"name": "dspose_t"},
           "data": {"kind": "coco", "root": str(root), "train_ann": "annotations/person_keypoints_train.json",
                    "train_images": "images/train", "val_ann": "annotations/person_keypoints_val.json",
                    "val_images": "images/val"},
           "optim": {"epochs": 1, "batch_size": 2, "milestones": []},
           "eval": {"every": 0, "batch_size": 4},
           "run": {"out_dir": str(out), "workers": 0, "progress": False, "tensorboard": False, "seed": 1}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def _write_backbone_file(path: Path, name: str, value: float) -> Path:
    """A stage 1-3 weight file of HRNet ``name`` with every tensor ``value``, named as ImageNet HRNet files are.

    The tensors are broadcast views of one number, so even W48's file takes a few kilobytes.
    """
    shapes = HRNetStage3(name, device="meta").net.state_dict()
    state = {k: torch.tensor(value).expand(v.shape) for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _write_detections(coco_root: Path, path: Path, duplicates: bool = False) -> list[dict]:
    """Detections = the val ground-truth boxes, scored 0.9 down to 0.5 in annotation order, plus (with
    ``duplicates``) each box again, 2 px to the right and scored just below it, and one low-scored box per image."""
    gt = json.loads((coco_root / "annotations" / "person_keypoints_val.json").read_text())
    anns = [a for a in gt["annotations"] if not a.get("iscrowd")]
    scores = np.linspace(0.9, 0.5, len(anns))
    dets = []
    for a, s in zip(anns, scores):
        dets.append({"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": float(s)})
        if duplicates:
            x, y, w, h = a["bbox"]
            dets.append({"image_id": a["image_id"], "category_id": 1, "bbox": [x + 2, y, w, h], "score": float(s) - 0.01})
    dets += [{"image_id": im["id"], "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.05} for im in gt["images"]]
    path.write_text(json.dumps(dets))
    return dets


# --- config keys --------------------------------------------------------------------------------------------------

def test_fidelity_keys_round_trip(tmp_path):
    raw = _config(tmp_path, tmp_path / "out",
                  model={"pretrained": "models/pytorch/imagenet/hrnet_w32-36af842e.pth"},
                  data={"codec": "hrnet", "augment": "mpii", "augment_overrides": {"rotation_factor": 40.0},
                        "keep_unannotated": False, "val_boxes": "dets.json", "det_score_thr": 0.1},
                  optim={"global_batch": 128}, eval={"oks_nms_threshold": 0.8, "rescore_threshold": 0.3})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    c = load_config(path)
    assert (c.model.pretrained, c.data.codec, c.data.augment, c.data.augment_overrides, c.data.keep_unannotated,
            c.data.val_boxes, c.data.det_score_thr, c.optim.global_batch, c.eval.oks_nms_threshold,
            c.eval.rescore_threshold) == ("models/pytorch/imagenet/hrnet_w32-36af842e.pth", "hrnet", "mpii",
                                          {"rotation_factor": 40.0}, False, "dets.json", 0.1, 128, 0.8, 0.3)
    path.write_text(config_to_yaml(c))
    assert load_config(path) == c
    assert load_config(path, ["model.pretrained=null"]).model.pretrained is None


def test_paper_base_files_state_the_official_recipe():
    coco, mpii = load_config(EXPERIMENTS / "base" / "coco.yaml"), load_config(EXPERIMENTS / "base" / "mpii.yaml")
    assert coco.model.pretrained == "models/pytorch/imagenet/hrnet_w32-36af842e.pth"
    assert mpii.model.pretrained == "models/pytorch/imagenet/hrnet_w48-8ef0771d.pth"
    assert (coco.data.codec, coco.data.augment, mpii.data.codec, mpii.data.augment) == ("tokenpose", "coco", "tokenpose", "mpii")
    assert coco.data.val_boxes.endswith("COCO_val2017_detections_AP_H_56_person.json") and coco.data.det_score_thr == 0.0
    assert (coco.eval.oks_nms_threshold, coco.eval.rescore_threshold) == (0.9, 0.2)
    # Official TokenPose: 4 GPUs, 32 per GPU on COCO (tokenpose_b yaml), 16 per GPU on MPII (tokenpose_l_D6 yaml).
    assert (coco.optim.batch_size, coco.optim.global_batch, coco.optim.lr) == (32, 128, 1e-3)
    assert (mpii.optim.batch_size, mpii.optim.global_batch, mpii.optim.lr) == (16, 64, 1e-3)
    assert mpii.data.keep_unannotated is True


@pytest.mark.parametrize("kind,augment,expected", [
    ("coco", True, AUGMENT_PRESETS["coco"]), ("mpii", True, AUGMENT_PRESETS["mpii"]),
    ("coco", "mpii", AUGMENT_PRESETS["mpii"]), ("coco", False, None), ("mpii", "none", None)])
def test_augment_key_selects_the_preset(tmp_path, kind, augment, expected):
    c = config_from_dict(_config(tmp_path, tmp_path, data={"kind": kind, "augment": augment}))
    assert augment_of(c) == expected


def test_augment_overrides_and_bad_names(tmp_path):
    c = config_from_dict(_config(tmp_path, tmp_path, data={"augment_overrides": {"half_body_prob": 0.0}}))
    assert augment_of(c).half_body_prob == 0.0 and augment_of(c).rotation_factor == 45.0
    with pytest.raises(ValueError, match=r"data\.augment_overrides: unknown field 'rotation'.*rotation_factor"):
        augment_of(config_from_dict(_config(tmp_path, tmp_path, data={"augment_overrides": {"rotation": 30}})))
    with pytest.raises(ValueError, match=r"data\.augment: unknown augmentation preset 'lsp'"):
        augment_of(config_from_dict(_config(tmp_path, tmp_path, data={"augment": "lsp"})))


def test_legacy_udp_key_names_its_replacement(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  udp: true\n")
    with pytest.raises(ValueError, match=r"old\.yaml: data: data\.udp was replaced by data\.codec: write codec: udp"):
        load_config(path)


def test_datasets_take_codec_augmentation_and_keep_unannotated(synthetic_coco, tmp_path):
    c = config_from_dict(_config(synthetic_coco, tmp_path, data={"codec": "udp", "augment": "mpii"}))
    model = build_model(c)
    train_set, val_set = build_dataset(c, model, "train", True), build_dataset(c, model, "val")
    assert train_set.codec.name == val_set.codec.name == "udp"
    assert train_set.train and train_set.augment == AUGMENT_PRESETS["mpii"] and not val_set.train
    with pytest.raises(ValueError, match=r"data\.codec: unknown codec 'dark'"):
        build_dataset(config_from_dict(_config(synthetic_coco, tmp_path, data={"codec": "dark"})), model, "val")


# --- pretrained backbone ------------------------------------------------------------------------------------------

def test_missing_pretrained_file_stops_before_any_data_is_read(tmp_path):
    # The data paths do not exist either: the pretrained file must be reported first, before data is built.
    c = config_from_dict(_config(tmp_path / "no_data", tmp_path / "out",
                                 model={"pretrained": "models/pytorch/imagenet/hrnet_w18_small.pth"}))
    with pytest.raises(FileNotFoundError) as e:
        train(c)
    message = str(e.value)
    assert "model.pretrained: models/pytorch/imagenet/hrnet_w18_small.pth not found" in message
    assert "hrnet_w18_small backbone of dspose_t" in message and "hrnet_w32-36af842e.pth" in message
    assert "deep-high-resolution-net.pytorch" in message and "model.pretrained: null" in message


def test_pretrained_file_loads_and_null_opts_out(tmp_path):
    weights = _write_backbone_file(tmp_path / "hrnet_w18_small.pth", "hrnet_w18_small", 0.25)
    c = config_from_dict(_config(tmp_path, tmp_path, model={"pretrained": str(weights)}))
    loaded = build_model(c).backbone.net.state_dict()
    assert all(torch.all(v == 0.25) for k, v in loaded.items() if not k.endswith("num_batches_tracked"))
    random_start = build_model(config_from_dict(_config(tmp_path, tmp_path, model={"pretrained": None})))
    assert not torch.all(random_start.backbone.net.conv1.weight == 0.25)
    # Counting parameters needs no file.
    missing = config_from_dict(_config(tmp_path, tmp_path, model={"pretrained": "absent.pth"}))
    assert build_model(missing, load_pretrained=False).backbone.net.conv1.weight.shape == loaded["conv1.weight"].shape


def test_tiny_experiment_rows_need_no_pretrained_file(tmp_path):
    from dspose_graph.train.experiment import prepare

    row = load_config(EXPERIMENTS / "coco_dspose_b.yaml")
    assert row.model.pretrained
    tiny = prepare(row, tmp_path, tiny=True)
    assert tiny.model.name == "dspose_t" and tiny.model.pretrained is None


# --- global batch ---------------------------------------------------------------------------------------------------

def test_global_batch_is_logged_and_a_difference_warned_with_the_lr(tmp_path, caplog):
    c = config_from_dict(_config(tmp_path, tmp_path, optim={"batch_size": 32, "global_batch": 128, "lr": 1e-3}))
    with caplog.at_level(logging.INFO, logger="dspose_graph.train.pipeline"):
        assert check_global_batch(c, 4) == 128
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "4 process(es) x 32 per process = global batch 128, lr 0.001" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dspose_graph.train.pipeline"):
        assert check_global_batch(c, 1) == 32
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == ["global batch 32 (1 process(es) x 32) differs from optim.global_batch 128 that lr 0.001 is set "
                       "for; training with lr 0.001 as configured (the linear rule would give lr 0.00025: "
                       "--set optim.lr=0.00025; or keep that global batch with --set optim.accumulate=auto)"]
    caplog.clear()
    accumulated = config_from_dict(_config(tmp_path, tmp_path, optim={"batch_size": 32, "global_batch": 128,
                                                                      "accumulate": "auto"}))
    with caplog.at_level(logging.INFO, logger="dspose_graph.train.pipeline"):
        assert check_global_batch(accumulated, 2) == 128  # 2 processes x 32 x 2 accumulated
    assert "2 process(es) x 32 per process x 2 accumulated = global batch 128" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    caplog.clear()
    unstated = config_from_dict(_config(tmp_path, tmp_path, optim={"batch_size": 32}))
    with caplog.at_level(logging.INFO, logger="dspose_graph.train.pipeline"):
        check_global_batch(unstated, 1)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- evaluation with detected boxes -------------------------------------------------------------------------------

def test_val_boxes_evaluate_detections_with_oks_nms_and_rescoring(synthetic_coco, tmp_path):
    """Perfect keypoints placed in duplicated detections: OKS-NMS removes the duplicates (AP 1), without it
    each duplicate is a false positive ranked above the next person (AP < 1)."""
    from dspose_graph.eval.ideal import perfect_network
    from dspose_graph.train.evaluate import compute_metrics

    det_file = tmp_path / "dets.json"
    dets = _write_detections(synthetic_coco, det_file, duplicates=True)
    c = config_from_dict(_config(synthetic_coco, tmp_path, data={"val_boxes": str(det_file), "det_score_thr": 0.3}))
    model = build_model(c)
    det_set = build_dataset(c, model, "val")
    gt_set = build_dataset(config_from_dict(_config(synthetic_coco, tmp_path)), model, "val")
    assert len(det_set) == 2 * len(gt_set) == len([d for d in dets if d["score"] >= 0.3])
    assert all(r.ann_id == -1 and np.all(r.keypoints == 0) for r in det_set.records)
    # The perfect network's keypoints of each ground-truth person, in the records of its two detections.
    perfect = perfect_network(gt_set)
    pred = {"coords": np.repeat(perfect["coords"], 2, axis=0), "scores": np.repeat(perfect["scores"], 2, axis=0),
            "image_id": np.array([r.image_id for r in det_set.records]),
            "box_score": np.array([r.score for r in det_set.records]),
            "center": np.stack([r.center for r in det_set.records]), "scale": np.stack([r.scale for r in det_set.records]),
            "gt": np.stack([r.keypoints for r in det_set.records])}
    with_nms = compute_metrics(pred, coco_gt=det_set.coco, nms_threshold=c.eval.oks_nms_threshold,
                               rescore_threshold=c.eval.rescore_threshold)
    without = compute_metrics(pred, coco_gt=det_set.coco, nms_threshold=None)
    assert with_nms["AP"] == pytest.approx(1.0) and without["AP"] < 0.9
    assert "PCK@0.2" not in with_nms  # detections carry no ground-truth keypoints


def test_evaluator_uses_the_config_thresholds_on_real_detections(data_root, tmp_path):
    """The MMPose fixture's SimpleBaseline detections: the evaluator built from the config scores exactly what
    predict_dataset + OKS-NMS 0.9 + rescoring 0.2 score, on the detections above the config's threshold."""
    from dspose_graph.train.evaluate import coco_results, compute_metrics, predict_dataset

    fixture = data_root / "mmpose_fixtures" / "coco"
    c = config_from_dict(_config(fixture, tmp_path, data={"val_ann": "test_coco.json", "val_images": ".",
                                                           "val_boxes": "test_coco_det_AP_H_56.json",
                                                           "det_score_thr": 0.3}))
    torch.manual_seed(0)
    model = build_model(c).eval()
    val_set = build_dataset(c, model, "val")
    dets = json.loads((fixture / "test_coco_det_AP_H_56.json").read_text())
    assert len(val_set) == sum(d["score"] >= 0.3 for d in dets) == 33
    metrics = build_evaluator(c, model, val_set)(model)
    pred = predict_dataset(model, val_set, batch_size=4, codec="tokenpose")
    assert metrics == compute_metrics(pred, coco_gt=val_set.coco, nms_threshold=0.9, rescore_threshold=0.2)
    assert set(metrics) >= {"AP", "AP50", "AR"} and "PCK@0.2" not in metrics
    # Other thresholds in the config reach the scoring too.
    c.eval.oks_nms_threshold, c.eval.rescore_threshold = 0.5, 0.52
    other = build_evaluator(c, model, val_set)(model)
    assert other == compute_metrics(pred, coco_gt=val_set.coco, nms_threshold=0.5, rescore_threshold=0.52)
    assert len(coco_results(pred, nms_threshold=0.5)) < len(coco_results(pred, nms_threshold=0.9))


# --- the codec of a training run ----------------------------------------------------------------------------------

def test_a_run_trained_with_hrnet_evaluates_and_predicts_with_hrnet(synthetic_coco, tmp_path, caplog):
    from dspose_graph.models.checkpoint import load_model
    from dspose_graph.predict import Predictor
    from dspose_graph.train.evaluate import predict_dataset

    c = config_from_dict(_config(synthetic_coco, tmp_path / "run", data={"codec": "hrnet", "limit_train": 4,
                                                                        "limit_val": 6},
                                 optim={"global_batch": 8}))
    with caplog.at_level(logging.WARNING, logger="dspose_graph.train.pipeline"):
        result = train(c)
    assert "global batch 2 (1 process(es) x 2) differs from optim.global_batch 8" in caplog.text
    model, state = load_model(result.last)
    assert state["inference"]["codec"] == "hrnet" and Predictor(result.last).codec.name == "hrnet"
    # The trainer's last evaluation decoded with the config's codec: re-evaluating the weights with an
    # evaluator of that codec gives the same metrics, and the codec changes the predictions.
    assert build_evaluator(c, model, result.val_set)(model) == result.metrics
    hrnet = predict_dataset(model, result.val_set, codec="hrnet")["coords"]
    tokenpose = predict_dataset(model, result.val_set, codec="tokenpose")["coords"]
    assert np.abs(hrnet - tokenpose).max() > 0.1


# --- dry run --------------------------------------------------------------------------------------------------------

def test_dry_run_builds_everything_and_writes_nothing(synthetic_coco, tmp_path):
    weights = _write_backbone_file(tmp_path / "w18.pth", "hrnet_w18_small", 0.1)
    _write_detections(synthetic_coco, tmp_path / "dets.json")
    out = tmp_path / "out"
    c = config_from_dict(_config(synthetic_coco, out, model={"pretrained": str(weights)},
                                 data={"val_boxes": str(tmp_path / "dets.json"), "det_score_thr": 0.3},
                                 optim={"global_batch": 2}))
    summary = dry_run(c)
    gt = json.loads((synthetic_coco / "annotations" / "person_keypoints_val.json").read_text())
    assert summary["val_samples"] == len(gt["annotations"]) and summary["train_samples"] > 0
    assert (summary["codec"], summary["pretrained"], summary["world_size"], summary["global_batch"]) == \
        ("tokenpose", str(weights), 1, 2)
    assert summary["augment"]["rotation_factor"] == 45.0
    assert not out.exists()
