"""``dspose eval-coco``: score a COCO keypoint results JSON against COCO-format ground truth (OKS AP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dspose_graph.data.coco import load_coco
from dspose_graph.eval.coco_eval import (
    check_ground_truth,
    check_scorable,
    evaluate_coco,
    format_coco_table,
    keypoint_category,
    load_results,
)
from dspose_graph.io import atomic_write_json, check_output_file, provenance
from topology.schemas import KeypointSchema

HELP = "OKS AP/AR of a COCO keypoint results JSON (pycocotools COCOeval)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="COCO keypoint results JSON (list of image_id, category_id, keypoints, score)")
    parser.add_argument("--annotations", required=True, type=Path, help="COCO-format ground-truth annotation JSON")
    parser.add_argument("--sigmas-from-schema", action="store_true",
                        help="use the OKS sigmas of the annotation file's keypoint schema (required for non-COCO-17 skeletons)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="drop results scoring below this")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics and provenance to this JSON")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_file(args.out)
    coco_gt = load_coco(args.annotations)
    check_ground_truth(coco_gt, str(args.annotations))
    check_scorable(coco_gt, f"--annotations {args.annotations}")
    sigmas = None
    if args.sigmas_from_schema:
        schema = KeypointSchema.from_coco_category(keypoint_category(coco_gt, str(args.annotations)), source=str(args.annotations))
        if schema.sigmas is None:
            raise ValueError(f"{args.annotations}: keypoint schema {schema.name!r} defines no OKS sigmas")
        sigmas = list(schema.sigmas)
    results = load_results(args.pred, coco_gt, score_threshold=args.score_threshold)
    stats = evaluate_coco(results, coco_gt, sigmas=sigmas)
    print(format_coco_table(stats))
    if args.out is not None:
        record = {"metrics": stats, "num_results": len(results),
                  "provenance": provenance(args.pred, annotations=str(args.annotations), sigmas=sigmas)}
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0
