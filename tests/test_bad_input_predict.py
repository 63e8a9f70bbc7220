"""``dspose predict`` on bad boxes, images, videos and options: exit status, a message naming file, record
and field, and an ``--out`` folder that never mixes two runs. Generated images and a random tiny model."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.cli.main import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_OS, EXIT_RUNTIME, main
from dspose_graph.detect import PERSON_LABEL, PersonDetector
from dspose_graph.predict import Predictor
from dspose_graph.formats.coco import write_keypoint_results
from dspose_graph.predict_files import check_prediction_options, predict_images, result_entries


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Two noise photos named by COCO id (1 and 2), 128 x 96."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        cv2.imwrite(str(folder / f"{i:012d}.jpg"), rng.integers(0, 255, (128, 96, 3), dtype=np.uint8))
    return folder


def _predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _boxes(tmp_path: Path, entries) -> Path:
    path = tmp_path / "dets.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return path


GOOD = {"image_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9, "category_id": 1}
BOX_CASES = {
    # the sweep's wrong outcomes: 1e308 and a NaN score wrote Infinity/NaN into results.json
    "huge": ({"bbox": [0, 0, 1e308, 50]}, r"record 1: 'bbox' field 'w' = 1e\+308 is not a finite pixel value"),
    "nan_score": ({"score": float("nan")}, r"record 1: field 'score' = nan is not a finite number"),
    "nan_x": ({"bbox": [float("nan"), 0, 10, 10]}, r"record 1: 'bbox' field 'x' = nan is not a finite pixel value"),
    "inf_h": ({"bbox": [0, 0, 10, float("inf")]}, r"record 1: 'bbox' field 'h' = inf is not a finite pixel value"),
    "string_y": ({"bbox": [0, "3", 10, 10]}, r"record 1: 'bbox' field 'y' = '3' is not a number"),
    "three_values": ({"bbox": [0, 0, 10]}, r"record 1: 'bbox' must be \[x, y, w, h\], got \[0, 0, 10\]"),
    "string_score": ({"score": "high"}, r"record 1: field 'score' = 'high' is not a finite number"),
    "bad_image_id": ({"image_id": "abc"}, r"record 1: field 'image_id' = 'abc' is not an integer image id"),
    "no_bbox": ({"bbox": KeyError}, r"record 1: missing field\(s\) \['bbox'\]"),
}


@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_a_bad_box_entry_stops_before_any_output(tmp_path, capsys, ckpt, images, case):
    change, expected = BOX_CASES[case]
    bad = {**GOOD, "image_id": 2, **{k: v for k, v in change.items() if v is not KeyError}}
    for key in [k for k, v in change.items() if v is KeyError]:
        del bad[key]
    dets = _boxes(tmp_path, [GOOD, bad])
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--boxes", str(dets),
                            "--out", str(tmp_path / "out"))
    assert code == EXIT_INPUT and err.count("\n") == 1, err
    assert re.search(rf"--boxes {re.escape(str(dets))}: {expected}", err), err
    assert not (tmp_path / "out").exists(), "nothing is written before every box is checked"


def test_empty_boxes_are_dropped_with_a_warning_naming_them(tmp_path, capsys, caplog, ckpt, images):
    dets = _boxes(tmp_path, [GOOD, {**GOOD, "bbox": [5, 5, 0, 40]}, {**GOOD, "image_id": 2, "bbox": [5, 5, 30, -1]}])
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--boxes", str(dets),
                            "--out", str(tmp_path / "out"), "--no-flip")
    assert code == EXIT_OK
    assert f"--boxes {dets}: 2 box(es) with w <= 0 or h <= 0 dropped (records 1, 2)" in caplog.text
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["image_id"], r["bbox"]) for r in results] == [(1, [10.0, 10.0, 50.0, 80.0])]


def test_results_never_hold_nan_a_model_with_nan_weights_is_named(tmp_path, capsys, ckpt, images):
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                           for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "nan.pt")
    code, _, err = _predict(capsys, "--weights", str(tmp_path / "nan.pt"), "--images", str(images),
                            "--out", str(tmp_path / "out"), "--no-flip")
    assert code == EXIT_INPUT and err.count("\n") == 1
    # Named at load time, as the checkpoint's fault (it used to surface as the first image's NaN heatmaps).
    assert re.search(rf"{re.escape(str(tmp_path / 'nan.pt'))}: weight '.+' holds \d+ NaN/inf value", err), err
    assert not (tmp_path / "out").exists()
    # The results writer is the last guard: a NaN that reached it is named, never written as NaN.
    person = {"keypoints": np.zeros((17, 3), np.float32), "score": float("nan"), "box": [0, 0, 5, 5]}
    with pytest.raises(ValueError, match=r"a\.jpg: person 0: field 'score' holds NaN/inf"):
        result_entries([person], 1, "a.jpg")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_keypoint_results(tmp_path / "r.json", [{"score": float("inf")}])


def test_a_run_that_fails_half_way_leaves_the_previous_run_untouched(tmp_path, capsys, ckpt, images, monkeypatch):
    out = tmp_path / "out"
    assert _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(out), "--no-flip")[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {str(p) for p in before} == {"results.json", "images/000000000001.jpg", "images/000000000002.jpg"}
    shutil.copy(images / "000000000001.jpg", images / "000000000003.jpg")
    real_predict, calls = Predictor.predict, []

    def interrupted_on_the_second_image(self, image, boxes=None, box_scores=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(self, image, boxes, box_scores)

    monkeypatch.setattr(Predictor, "predict", interrupted_on_the_second_image)
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(out), "--no-flip")
    assert code == EXIT_INTERRUPTED and len(calls) == 2
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "the folder holds the first run only: no file of the interrupted one"
    assert sorted(p.name for p in out.iterdir()) == ["images", "results.json"], "the temporary folder is gone"


def test_a_second_run_replaces_the_first_one_whole(tmp_path, capsys, ckpt, images):
    out = tmp_path / "out"
    assert _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(out), "--no-flip")[0] == 0
    assert _predict(capsys, "--weights", str(ckpt), "--images", str(images / "000000000002.jpg"), "--out",
                    str(out), "--no-flip")[0] == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000000002.jpg"]
    assert [r["image_id"] for r in json.loads((out / "results.json").read_text())] == [2]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_a_truncated_jpeg_is_an_error_alone_and_skipped_in_a_folder(tmp_path, capsys, ckpt, images):
    cut = _truncate(images / "000000000002.jpg")
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(cut), "--out", str(tmp_path / "a"))
    assert code == EXIT_INPUT and f"image file {cut} is a truncated JPEG" in err, err
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "b"),
                            "--no-flip")
    assert code == EXIT_OK and "skipped 1 unreadable file(s)" in err and "000000000002.jpg" in err
    assert [r["image_id"] for r in json.loads((tmp_path / "b" / "results.json").read_text())] == [1]


def test_a_truncated_video_warns_with_frames_read_and_expected(tmp_path, capsys, caplog, ckpt):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    _truncate(video, 0.6)
    code, out, err = _predict(capsys, "--weights", str(ckpt), "--video", str(video), "--out", str(tmp_path / "o"),
                              "--no-flip")
    read = int(re.search(r"person\(s\) in (\d+) frame", out).group(1))
    assert code == EXIT_OK and 0 < read < 20
    assert f"--video {video}: read {read} of the 20 frames its header states" in caplog.text, err


def test_without_boxes_or_detector_a_warning_names_both(tmp_path, capsys, caplog, ckpt, images):
    code, _, _ = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o"),
                            "--no-flip")
    assert code == EXIT_OK
    warning = caplog.text
    assert "each image is taken as one person (the whole image)" in warning
    assert "--detector" in warning and "--boxes" in warning


OPTION_CASES = {
    "max_persons_without_detector": (["--max-persons", "3"], r"--max-persons selects the persons of --detector"),
    "threshold_above_one": (["--detector", "retinanet", "--det-threshold", "1.5"],
                            r"--det-threshold must be in \[0, 1\] \(a detection score\), got 1.5"),
    "no_persons": (["--detector", "fasterrcnn", "--max-persons", "0"], r"--max-persons must be >= 1, got 0"),
    "negative_frames": (["--max-frames", "-1"], r"--max-frames must be >= 0"),
    "batch_zero": (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    "nan_keypoint_threshold": (["--kpt-thr", "nan"], r"--kpt-thr must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_impossible_options_name_the_option(tmp_path, capsys, ckpt, images, case):
    extra, expected = OPTION_CASES[case]
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o"),
                            *extra)
    assert code == EXIT_INPUT and re.search(expected, err), err
    assert not (tmp_path / "o").exists()


def test_the_option_check_is_callable_from_python():
    check_prediction_options()  # the defaults of predict_images
    check_prediction_options(detector="retinanet", det_thr=0.0, max_persons=1, max_frames=0, batch_size=1)
    for kwargs, expected in [({"det_thr": float("inf")}, "--det-threshold must be a finite number"),
                             ({"det_thr": -0.1}, r"--det-threshold must be in \[0, 1\]"),
                             ({"precision": "fp16"}, r"--precision fp16: "),
                             ({"precision": "fp8"}, r"--precision fp8: ")]:
        with pytest.raises(ValueError, match=expected):
            check_prediction_options(**kwargs)


def test_boxes_and_detector_together_is_a_usage_error(tmp_path, capsys, ckpt, images):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o"),
              "--boxes", str(tmp_path / "d.json"), "--detector", "fasterrcnn"])
    assert stop.value.code == EXIT_INPUT and "not allowed with argument" in capsys.readouterr().err


def test_detector_offline_names_boxes_and_writes_nothing(tmp_path, capsys, ckpt, images, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o"),
                            "--detector", "fasterrcnn_mobilenet")
    # One error line (older torchvision also announces the download it then fails on, on a line of its own).
    errors = [line for line in err.splitlines() if not line.startswith("Downloading: ")]
    assert code == EXIT_RUNTIME and len(errors) == 1 and "give person boxes with --boxes" in errors[0], err
    assert not (tmp_path / "o").exists()


def test_detector_boxes_reach_the_results(tmp_path, ckpt, images):
    """A random-init detector (person logit raised, as in test_detect) through predict_images: one result per
    detected box, with the detector's box and a score that includes the detector's."""
    torch.manual_seed(0)
    detector = PersonDetector("fasterrcnn_mobilenet", pretrained=False, min_size=160, score_threshold=0.05,
                              max_persons=3)
    with torch.no_grad():
        detector.model.roi_heads.box_predictor.cls_score.bias.view(1, 91)[:, PERSON_LABEL] += 4.0
    done = predict_images(ckpt, images, tmp_path / "o", detector=detector, flip_test=False)
    results = json.loads(done.results.read_text())
    from dspose_graph.data import load_image

    expected = [(1 + i, [round(float(v), 2) for v in box]) for i, name in enumerate(sorted(images.iterdir()))
                for box in detector(load_image(name))[0]]
    assert 0 < len(results) <= 6
    assert [(r["image_id"], r["bbox"]) for r in results] == expected


def test_out_naming_a_file_stops_before_any_work(tmp_path, capsys, images):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    code, _, err = _predict(capsys, "--weights", str(tmp_path / "absent.pt"), "--images", str(images),
                            "--out", str(taken))
    assert code == EXIT_OS and err == f"dspose predict: error: --out {taken}: is an existing file; expected a " \
                                      "folder (or a new name)\n"
    assert taken.read_text() == "mine"


@pytest.mark.parametrize("case", ["string_id", "annotations_not_objects"])
def test_a_bad_coco_json_names_file_record_and_field(tmp_path, capsys, ckpt, images, case):
    mapping = tmp_path / "coco.json"
    if case == "string_id":
        mapping.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": "x7", "file_name": "b.jpg"}]}))
        argv, expected = ["--coco-json", str(mapping)], f"--coco-json {mapping}: images[1] field 'id' = 'x7' is not an integer"
    else:
        mapping.write_text(json.dumps({"images": [], "annotations": [3, 4]}))
        argv, expected = ["--boxes", str(mapping)], f"--boxes {mapping}: 'annotations' must be a list of objects"
    code, _, err = _predict(capsys, "--weights", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o"),
                            *argv)
    assert code == EXIT_INPUT and expected in err, err
