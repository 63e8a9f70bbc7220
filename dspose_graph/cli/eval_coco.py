"""``dspose eval-coco``: score a COCO keypoint results JSON against COCO-format ground truth (OKS AP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dspose_graph.eval.coco_eval import evaluate_coco_files, format_coco_table
from dspose_graph.io import atomic_write_json, check_output_file, provenance

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
    stats, num_results, sigmas = evaluate_coco_files(args.pred, args.annotations, args.sigmas_from_schema,
                                                     args.score_threshold)
    print(format_coco_table(stats))
    if args.out is not None:
        record = {"metrics": stats, "num_results": num_results,
                  "provenance": provenance(args.pred, annotations=str(args.annotations), sigmas=sigmas)}
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0
