"""``dspose predict``: the CLI of ``dspose_graph.predict_files`` (images, a folder or a video -> COCO results + drawings)."""

from __future__ import annotations

import argparse
import sys

HELP = "predict keypoints on images, a folder or a video (COCO-results JSON + drawn skeletons)"
# The names of dspose_graph.detect.DETECTORS, spelled out so that --help does not import torchvision.
DETECTOR_NAMES = ("fasterrcnn", "retinanet", "fasterrcnn_mobilenet")
DEFAULT_DET_THRESHOLD, DEFAULT_MAX_PERSONS = 0.5, 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt) or shipped weight name (dspose weights)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="an image file or a folder of images")
    src.add_argument("--video", help="a video file (any format OpenCV reads)")
    persons = p.add_mutually_exclusive_group()
    persons.add_argument("--boxes", help="person boxes: COCO detection results (list) or a COCO dataset JSON")
    persons.add_argument("--detector", choices=DETECTOR_NAMES,
                         help="find the persons with this torchvision COCO detector (weights fetched on first use)")
    p.add_argument("--coco-json", help="COCO JSON whose 'images' map file names to the image_id of --boxes")
    p.add_argument("--det-threshold", "--det-thr", dest="det_thr", type=float, default=None,
                   help="ignore boxes with a lower score (default: 0 for --boxes, 0.5 for --detector)")
    p.add_argument("--max-persons", type=int, default=None,
                   help=f"--detector: keep at most N persons per image, best first (default {DEFAULT_MAX_PERSONS})")
    p.add_argument("--ignore-missing", action="store_true",
                   help="skip boxes whose image is not among the inputs instead of failing")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="persons per forward pass")
    p.add_argument("--no-flip", action="store_true", help="disable flip-test averaging (faster)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision of the model (default fp32; fp16 needs a CUDA --device; docs/speed.md)")
    p.add_argument("--channels-last", action="store_true", help="run the model in the NHWC memory format")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (faster per image; compiling takes minutes on a CPU)")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="draw keypoints with at least this score")
    p.add_argument("--max-frames", type=int, default=0, help="video: stop after N frames (0 = all)")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.predict_files import check_prediction_options, predict_images, predict_video

    # Options first; predict_images / predict_video then check --out first themselves.
    check_prediction_options(batch_size=args.batch_size, max_frames=args.max_frames, det_thr=args.det_thr,
                             kpt_thr=args.kpt_thr, detector=args.detector, max_persons=args.max_persons,
                             precision=args.precision, device=args.device)
    det_thr = args.det_thr if args.det_thr is not None else DEFAULT_DET_THRESHOLD if args.detector else 0.0
    common = dict(boxes=args.boxes, det_thr=det_thr, kpt_thr=args.kpt_thr, device=args.device,
                  flip_test=not args.no_flip, batch_size=args.batch_size, detector=args.detector,
                  max_persons=args.max_persons or DEFAULT_MAX_PERSONS, precision=args.precision,
                  channels_last=args.channels_last, compile=args.compile)
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
