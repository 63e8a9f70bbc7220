"""Perfect-network figures per codec: each codec's own targets, flip-tested and decoded back into the image.

For every person box of a COCO-format set (default: coco_mini val from the data folder) the targets a codec
trains on are treated as the network output (its mirrored-crop targets for the flip test), decoded with the
same codec (flip_back, DARK, back-projection) and compared with the annotations: mean error and x/y bias in
image pixels over the keypoints with a target, mean OKS per person, and COCO AP through pycocotools after
rescoring and OKS-NMS as the trainer evaluates. No model and no image are involved, so this runs in seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dspose_graph.data.codec import CODECS
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.eval.coco_eval import evaluate_coco, make_coco_results
from dspose_graph.eval.ideal import error_stats, mean_oks, perfect_network
from dspose_graph.io import shared_data_dir


def codec_row(ds: CocoKeypointDataset, flip_test: bool) -> dict[str, float]:
    pred = perfect_network(ds, flip_test=flip_test)
    row = error_stats(pred)
    areas = np.array([ds.coco.anns[int(a)].get("area", 0.0) for a in pred["ann_id"]])
    sigmas = np.asarray(ds.schema.sigmas) if ds.schema.sigmas is not None else None
    if sigmas is not None:
        row["mean_oks"] = mean_oks(pred, areas, sigmas)
    keypoints = np.concatenate([pred["coords"], pred["scores"][..., None]], axis=-1)
    results = make_coco_results(keypoints, pred["image_id"], pred["box_score"], areas=pred["scale"].prod(axis=1),
                                category_id=ds.category_id, sigmas=sigmas, nms_threshold=0.9)
    row["AP"] = evaluate_coco(results, ds.coco, sigmas=None if ds.schema.num_keypoints == 17 else sigmas)["AP"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_codec", description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, help="COCO-format keypoint json (default: coco_mini val)")
    parser.add_argument("--images", type=Path, help="its image folder (only checked to exist; no image is read)")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    parser.add_argument("--input-size", type=int, nargs=2, default=[192, 256], metavar=("W", "H"))
    parser.add_argument("--heatmap-size", type=int, nargs=2, default=[48, 64], metavar=("W", "H"))
    args = parser.parse_args(argv)
    if args.annotations is None:
        root = shared_data_dir()
        if root is None:
            print("no data folder found: pass --annotations and --images (or set DSPOSE_DATA)", file=sys.stderr)
            return 2
        args.annotations = root / "coco_mini" / "annotations" / "person_keypoints_val.json"
        args.images = args.images or root / "coco_mini" / "images" / "val"
    images = args.images or args.annotations.parent
    print(f"perfect network on {args.annotations} (input {tuple(args.input_size)}, heatmap {tuple(args.heatmap_size)}; "
          f"DARK, sigma 2; error/bias in image px over keypoints with a target)")
    print(f"{'codec':<10} {'flip':<5} {'kpts':>5} {'mean err':>9} {'x bias':>8} {'y bias':>8} {'mean OKS':>9} {'AP':>7}")
    for name in args.codecs:
        ds = CocoKeypointDataset(args.annotations, images, codec=name, input_size=tuple(args.input_size),
                                 heatmap_size=tuple(args.heatmap_size))
        for flip in (True, False):
            r = codec_row(ds, flip)
            oks = f"{r['mean_oks']:9.5f}" if "mean_oks" in r else f"{'n/a':>9}"
            print(f"{name:<10} {'yes' if flip else 'no':<5} {int(r['count']):5d} {r['mean_error']:9.4f} "
                  f"{r['x_bias']:+8.4f} {r['y_bias']:+8.4f} {oks} {100 * r['AP']:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
