"""Entry point of the ``dspose`` command.

Each sub-command is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. The table below is the whole registry.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from typing import Callable

from dspose_graph import __version__
from dspose_graph.process import LOG_RANKS, configure_logging, record_error, sigterm_as_interrupt, terminated

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
    "weights": "dspose_graph.cli.weights",
}


EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_OS, EXIT_RUNTIME, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 4, 130, 143
EXIT_STATUS = f"""exit status:
  {EXIT_OK}    success
  {EXIT_BUG}    internal error (a bug): the traceback is printed; please report it
  {EXIT_INPUT}    bad input or usage: a file, record, field or option is wrong (the message names it)
  {EXIT_OS}    the system refused a file operation: disk full, permission denied, --out names a file
       where a folder is expected (or the reverse)
  {EXIT_RUNTIME}    a runtime failure: device or library error (CUDA out of memory, a failed CUDA call,
       a non-finite training loss, a detector whose weights cannot be fetched)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): files already written are complete (every output is written
       atomically); a training run resumes from OUT/last.pt with --resume
  {EXIT_TERMINATED}  terminated (SIGTERM: a job scheduler's time limit, preemption, torchrun stopping the other
       ranks): handled as Ctrl-C (the run folder's lock is released); a training run names its last good
       checkpoint and the command that resumes it
Errors print one line on stderr; --debug (or DSPOSE_DEBUG=1) adds the traceback."""
DEBUG_ENV = "DSPOSE_DEBUG"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (all of them when it is ``None``).

    Importing one command module pulls in torch and friends, so a call imports just the one it runs.
    """
    parser = argparse.ArgumentParser(prog="dspose", description="DSPose: dual-space keypoint topology for pose estimation",
                                     epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dspose {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help=f"print tracebacks of errors (also: {DEBUG_ENV}=1)")
    parser.add_argument("--log-ranks", choices=LOG_RANKS, default="main",
                        help="under torchrun: 'main' = rank 0 logs everything, the others warnings and errors; "
                             "'all' = every rank logs everything (lines are tagged [rank R/W] either way)")
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
    """The sub-command named on the command line, if it is a known one ("" for ``--version``: import none)."""
    for arg in argv:
        if arg == "--version":
            return ""
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def check_device_option(args: argparse.Namespace) -> None:
    """Refuse a ``--device`` that torch does not know or that this machine lacks, before any work starts."""
    name = getattr(args, "device", None)
    if isinstance(name, str) and name != "auto":
        from dspose_graph.models.runtime import check_device

        check_device(name)


def _os_message(e: OSError) -> str:
    if e.strerror and e.filename is not None:
        target = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return f"{target}: {e.strerror}"
    return str(e) or type(e).__name__


def run_guarded(command: str, run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                debug: bool = False) -> int:
    """Run a sub-command; every expected failure becomes one line on stderr and an exit status (EXIT_STATUS).

    Bad input (``ValueError``, ``FileNotFoundError``, ``KeyError``) -> 2, other ``OSError`` -> 3,
    ``RuntimeError`` -> 4, Ctrl-C -> 130, SIGTERM (see :func:`~dspose_graph.process.sigterm_as_interrupt`) -> 143.
    Anything else is a bug and keeps its traceback (exit 1). Under ``torchrun`` the error is also written to its
    error file (:func:`~dspose_graph.process.record_error`).
    """
    try:
        check_device_option(args)
        return int(run(args) or 0)
    except KeyboardInterrupt as e:
        error: BaseException = e
        # A command may say what to do next (``dspose train``: the checkpoint and the command that resumes it).
        hint = e.args[0] if e.args and isinstance(e.args[0], str) else \
            "files already written are complete (a training run resumes from OUT/last.pt with --resume)"
        code, message = (EXIT_TERMINATED, f"terminated (SIGTERM); {hint}") if terminated() else \
            (EXIT_INTERRUPTED, f"interrupted; {hint}")
    except (ValueError, FileNotFoundError, KeyError) as e:
        error, code, message = e, EXIT_INPUT, str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, FileNotFoundError) and e.strerror and e.filename is not None:
            message = _os_message(e)
    except OSError as e:
        error, code, message = e, EXIT_OS, _os_message(e)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        error, code, message = e, EXIT_RUNTIME, f"{type(e).__name__}: {first[0] if first else ''}"
        if terminated():  # a DataLoader worker stopped by the same SIGTERM can fail first
            code, message = EXIT_TERMINATED, f"terminated (SIGTERM) ({message})"
    except Exception as e:  # a bug: recorded for torchrun, then its traceback as ever
        record_error(e)
        raise
    if debug:
        traceback.print_exception(error)
    record_error(error)
    print(f"dspose {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    # torch_geometric scripts a few helpers at import time; torch 2.14 warns about that on every call.
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_requested_command(argv)).parse_args(argv)
    configure_logging(args.verbose, args.log_ranks)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with sigterm_as_interrupt():
        return run_guarded(args.command, args._run, args, debug)


if __name__ == "__main__":
    raise SystemExit(main())
