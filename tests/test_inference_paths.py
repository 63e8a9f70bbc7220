"""One inference path: ``Predictor``, validation (``predict_dataset``), the perfect-network check and the adjacency
figures all run ``eval.inference.predict_crops`` with the checkpoint's codec, so the same crops give the same
keypoints bit for bit. The shipped weights record the ``hrnet`` codec, not the default one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dspose_graph.data import CocoKeypointDataset, load_image
from dspose_graph.eval.ideal import PerfectNetwork, perfect_network
from dspose_graph.predict import Predictor
from dspose_graph.train.evaluate import predict_dataset
from dspose_graph.viz.learned import Samples, image_samples, sample_keypoints

WEIGHTS = "dspose_t_synthetic"


def _one_image(synthetic_coco: Path, tmp_path: Path) -> tuple[Path, np.ndarray, Path]:
    """The first val image with at least two persons, its ground-truth boxes, and those boxes as detections."""
    coco = json.loads((synthetic_coco / "annotations" / "person_keypoints_val.json").read_text())
    by_image: dict[int, list[list[float]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    image = next(im for im in coco["images"] if len(by_image.get(im["id"], [])) >= 2)
    boxes = np.asarray(by_image[image["id"]], dtype=np.float64)
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": image["id"], "category_id": 1, "bbox": b, "score": 1.0}
                               for b in boxes.tolist()]))
    return synthetic_coco / "images" / "val" / image["file_name"], boxes, det


def test_the_four_callers_give_identical_keypoints(synthetic_coco, tmp_path):
    image, boxes, det = _one_image(synthetic_coco, tmp_path)
    predictor = Predictor(WEIGHTS)  # a shipped name, flip test on
    assert predictor.codec.name == "hrnet"  # what the shipped checkpoint records, not the default codec
    model = predictor.model
    dataset = CocoKeypointDataset(synthetic_coco / "annotations" / "person_keypoints_val.json",
                                  synthetic_coco / "images" / "val", detections=det, codec=predictor.codec,
                                  input_size=model.input_size, heatmap_size=model.heatmap_size)
    assert len(dataset) == len(boxes) >= 2

    # Prediction and validation: the same crops, flip test + DARK, back into the image.
    people = predictor.predict(image, boxes)
    points, scores = predictor.keypoints(*predictor.crop(load_image(image),
                                                          boxes))
    validation = predict_dataset(model, dataset, batch_size=len(boxes))
    np.testing.assert_array_equal(validation["coords"], points)
    np.testing.assert_array_equal(validation["scores"], scores)
    np.testing.assert_array_equal(np.stack([p["keypoints"] for p in people]),
                                  np.concatenate([points, scores[..., None]], axis=2).astype(np.float32))

    # Adjacency figures: the crops of the image, no flip test, the checkpoint's codec.
    plain = Predictor(WEIGHTS, flip_test=False)
    crops, centers, scales = plain.crop(load_image(image), boxes)
    _, fig_points, fig_scores = sample_keypoints(Samples(model, crops, centers, scales, plain.codec, None, "test"))
    np.testing.assert_array_equal(fig_points, plain.keypoints(crops, centers, scales)[0])
    np.testing.assert_array_equal(fig_scores, plain.keypoints(crops, centers, scales)[1])
    one = image_samples(WEIGHTS, image, boxes[0].tolist())
    assert one.codec.name == "hrnet"
    # One crop is a batch of one, whose convolutions may round differently from a batch of several.
    np.testing.assert_array_equal(sample_keypoints(one)[1], plain.keypoints(crops[:1], centers[:1], scales[:1])[0])
    no_flip = predict_dataset(model, dataset, batch_size=len(boxes), flip_test=False)
    np.testing.assert_array_equal(no_flip["coords"], fig_points)

    # The perfect-network check (on ground-truth boxes, which carry keypoints): its network shown the dataset's
    # own crops through validation gives what the check computes from crop tokens.
    dataset = CocoKeypointDataset(synthetic_coco / "annotations" / "person_keypoints_val.json",
                                  synthetic_coco / "images" / "val", codec=predictor.codec,
                                  input_size=model.input_size, heatmap_size=model.heatmap_size)
    network = PerfectNetwork(dataset)
    shown = torch.stack([dataset[i]["image"] for i in range(len(dataset))])

    def perfect(images: torch.Tensor) -> torch.Tensor:
        tokens = []
        for crop in images:
            own = [j for j in range(len(shown)) if torch.equal(crop, shown[j])]
            tokens.append([own[0], -1.0] if own else [-1.0, next(j for j in range(len(shown))
                                                              if torch.equal(crop, shown[j].flip(2)))])
        return network(torch.tensor(tokens, dtype=torch.float64).view(-1, 1, 1, 2))

    ideal = perfect_network(dataset)
    through_validation = predict_dataset(model, dataset, batch_size=len(dataset), forward=perfect)
    np.testing.assert_array_equal(through_validation["coords"], ideal["coords"])
    np.testing.assert_array_equal(through_validation["scores"], ideal["scores"])
    # And it is the check it claims to be: the codec's own targets (HRNet's: centred on the nearest heatmap
    # pixel) decode back onto the labelled joints to within that rounding.
    labelled = ideal["weight"] > 0
    cell = ideal["scale"][:, :1] / model.heatmap_size[0]
    error = np.linalg.norm(ideal["coords"] - ideal["gt"][..., :2], axis=-1) / cell
    assert labelled.sum() >= 50 and error[labelled].mean() < 0.5
