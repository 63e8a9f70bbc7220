"""``dspose weights``: the shipped weights and their model cards (``dspose_graph.weights``)."""

from __future__ import annotations

import argparse

HELP = "list the shipped weights (name, model, skeleton, metrics, file); a name works wherever a checkpoint does"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the list comes from the model cards ``dspose_graph/weights/*.json``."""


def run(args: argparse.Namespace) -> int:
    from dspose_graph.weights import format_weights_table

    print(format_weights_table())
    return 0
