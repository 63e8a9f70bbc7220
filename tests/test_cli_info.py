"""``dspose info MODEL --set``: the training config's ``--set`` dialect (``model.overrides.KEY=VALUE``, YAML values)."""

from __future__ import annotations

import json

from dspose_graph.cli.main import EXIT_INPUT, main


def test_set_uses_the_training_dialect(capsys):
    assert main(["info", "dspose_t", "--json", "--set", "model.overrides.conv=gat", "--set",
                 "model.overrides.head_layers=1"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["conv"], config["head_layers"]) == ("gat", 1)


def test_a_bare_key_is_refused_naming_the_new_spelling(capsys):
    assert main(["info", "dspose_t", "--set", "conv=gat"]) == EXIT_INPUT
    assert "write model.overrides.conv=gat" in capsys.readouterr().err


def test_keys_outside_model_overrides_are_refused(capsys):
    assert main(["info", "dspose_t", "--set", "optim.lr=0.1"]) == EXIT_INPUT
    assert "model.overrides.KEY=VALUE only" in capsys.readouterr().err
