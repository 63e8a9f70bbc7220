"""``dspose predict``: the CLI of ``dspose_graph.predict_files`` (images, a folder or a video -> COCO results + drawings)."""

from __future__ import annotations

import argparse
import sys

HELP = "predict keypoints on images, a folder or a video (COCO-results JSON + drawn skeletons)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt) from dspose train / dspose demo")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="an image file or a folder of images")
    src.add_argument("--video", help="a video file (any format OpenCV reads)")
    p.add_argument("--boxes", help="person boxes: COCO detection results (list) or a COCO dataset JSON")
    p.add_argument("--coco-json", help="COCO JSON whose 'images' map file names to the image_id of --boxes")
    p.add_argument("--det-thr", type=float, default=0.0, help="ignore boxes with a lower score (default 0)")
    p.add_argument("--ignore-missing", action="store_true",
                   help="skip boxes whose image is not among the inputs instead of failing")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="persons per forward pass")
    p.add_argument("--no-flip", action="store_true", help="disable flip-test averaging (faster)")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="draw keypoints with at least this score")
    p.add_argument("--max-frames", type=int, default=0, help="video: stop after N frames (0 = all)")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.predict_files import predict_images, predict_video

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    common = dict(boxes=args.boxes, det_thr=args.det_thr, kpt_thr=args.kpt_thr, device=args.device,
                  flip_test=not args.no_flip, batch_size=args.batch_size)
    if args.images:
        done = predict_images(args.weights, args.images, args.out, coco_json=args.coco_json,
                              ignore_missing=args.ignore_missing, **common)
        print(f"{done.persons} person(s) in {done.inputs} image(s) -> {done.results}, drawings in {done.drawn}")
    else:
        done = predict_video(args.weights, args.video, args.out, max_frames=args.max_frames, **common)
        print(f"{done.persons} person(s) in {done.inputs} frame(s) -> {done.results}, video {done.drawn}")
    if done.failed:
        print(f"skipped {len(done.failed)} unreadable file(s):\n  " + "\n  ".join(done.failed), file=sys.stderr)
    return 0
