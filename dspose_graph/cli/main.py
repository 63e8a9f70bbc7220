"""Entry point of the ``dspose`` command.

Each sub-command is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. The table below is the whole registry.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

COMMANDS = {
    "eval-coco": "dspose_graph.cli.eval_coco",
    "eval-mpii": "dspose_graph.cli.eval_mpii",
    "topology": "dspose_graph.cli.topology",
    "bench": "dspose_graph.cli.bench",
    "synth": "dspose_graph.cli.synth",
    "predict": "dspose_graph.cli.predict",
    "plot": "dspose_graph.cli.plot",
    "export": "dspose_graph.cli.export",
    "train": "dspose_graph.cli.train",
    "demo": "dspose_graph.cli.demo",
    "experiment": "dspose_graph.cli.experiment",
    "info": "dspose_graph.cli.info",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (all of them when it is ``None``).

    Importing one command module pulls in torch and friends, so a call imports just the one it runs.
    """
    parser = argparse.ArgumentParser(prog="dspose", description="DSPose: dual-space keypoint topology for pose estimation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _requested_command(argv: list[str]) -> str | None:
    """The sub-command named on the command line, if it is a known one."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    # torch_geometric scripts a few helpers at import time; torch 2.14 warns about that on every call.
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_requested_command(argv)).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"dspose {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
