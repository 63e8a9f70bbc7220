"""``dspose eval-mpii``: PCKh@0.5 of MPII validation predictions, as the official toolkit computes it."""

from __future__ import annotations

import argparse
from pathlib import Path

from dspose_graph.eval.pckh import OFFICIAL_LOW_THRESHOLD, check_threshold, default_gt_path, evaluate_pckh, format_pckh_table, load_predictions
from dspose_graph.io import atomic_write_json, check_output_file, provenance

HELP = "PCKh of MPII validation predictions (.mat 'preds' (N,16,2) or (16,2,N), .npy, .json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="predictions, one row per val person of detections_our_format.mat")
    parser.add_argument("--gt", type=Path, default=None, help="ground truth (default: <data>/mpii/detections_our_format.mat)")
    parser.add_argument("--key", default="preds", help="field holding the predictions in a .mat or JSON object")
    parser.add_argument("--zero-based", action="store_true",
                        help="predictions use 0-based pixel coordinates (HRNet's saved preds before its +1): add 1")
    parser.add_argument("--threshold", type=float, default=0.5, help="PCKh threshold (fraction of the head size)")
    parser.add_argument("--low-threshold", type=float, default=OFFICIAL_LOW_THRESHOLD,
                        help="threshold of the 'Mean@0.1' column (default 0.11, what HRNet/TokenPose print under that "
                             "name; the exact 0.1 value is printed beside it, see docs/evaluation.md)")
    parser.add_argument("--out", type=Path, default=None, help="write the result and provenance to this JSON")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_file(args.out)
    check_threshold(args.threshold, "--threshold")
    check_threshold(args.low_threshold, "--low-threshold")
    preds = load_predictions(args.pred, key=args.key, zero_based=args.zero_based)
    gt = args.gt if args.gt is not None else default_gt_path()
    result = evaluate_pckh(preds, gt, threshold=args.threshold, low_threshold=args.low_threshold, source=str(args.pred))
    print(format_pckh_table(result))
    if args.out is not None:
        atomic_write_json(args.out, {"result": result, "provenance": provenance(args.pred, gt=str(gt), zero_based=args.zero_based)})
        print(f"wrote {args.out}")
    return 0
