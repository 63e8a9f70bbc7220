"""Experiment tables: every paper row is present with the right override, results tables are written."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from dspose_graph.train.ablation import recipe_path
from dspose_graph.train.experiment import (default_experiments_dir, format_table_list, paper_table, scale_milestones,
                                           table_rows)


@pytest.fixture(scope="module")
def tables():
    return table_rows(default_experiments_dir())


def test_every_paper_table_is_there(tables):
    assert {"coco", "table5", "table6", "table7", "table8", "mpii", "convs"} <= set(tables)
    assert sorted(c.model.overrides["t"] for _, c in tables["table7"]) == [3, 4, 5, 6, 8, 10]
    assert sorted(c.model.overrides["head_layers"] for _, c in tables["table8"]) == [1, 2, 3]
    assert sorted(c.model.overrides["head"] for _, c in tables["table5"]) == ["dual", "feature", "mlp"]
    assert {c.model.name for _, c in tables["coco"]} == {"dspose_b", "tokenpose_b"}
    assert {"gat", "gatv2", "graphconv"} <= {c.model.overrides["conv"] for _, c in tables["convs"]}
    assert all(c.data.kind == "mpii" for _, c in tables["table6"] + tables["mpii"])


def test_the_table_list_names_every_table_and_ablation_with_its_rows(tables):
    lines = format_table_list(default_experiments_dir()).splitlines()
    names = [line.split(":")[0] for line in lines]
    assert names[:len(tables)] == sorted(tables) and "lsp-table5" in names[len(tables):]
    assert f"table8: {', '.join(c.paper.row for _, c in tables['table8'])}" in lines
    with pytest.raises(FileNotFoundError, match="does not exist"):
        format_table_list(default_experiments_dir() / "nope")


def test_a_paper_table_by_name_and_the_ablations_recipe(tables, tmp_path):
    assert paper_table("table8", default_experiments_dir()) == tables["table8"]
    with pytest.raises(ValueError, match=r"unknown table 'table99'; valid: .*table8.*lsp-table5"):
        paper_table("table99", default_experiments_dir())
    assert recipe_path() == default_experiments_dir() / "lsp" / "ablation.yaml" and recipe_path().is_file()
    assert recipe_path(tmp_path) == tmp_path / "lsp" / "ablation.yaml"


def test_paper_numbers_given_in_the_brief(tables):
    by_row = {(c.paper.table, c.paper.row): c.paper for rows in tables.values() for _, c in rows}
    assert by_row[("coco", "DSPose-B")].value == 75.1 and by_row[("coco", "DSPose-B")].params_m == 13.5
    assert by_row[("mpii", "DSPose-L")].value == 90.3 and by_row[("mpii", "DSPose-L")].params_m == 20.9
    assert by_row[("table8", "N=1")].params_m == 12.9


def test_every_row_builds_a_model_with_its_overrides(tables):
    from dspose_graph.models import PRESETS

    for rows in tables.values():
        for path, c in rows:
            assert c.model.name in PRESETS, path
            assert set(c.model.overrides) <= {"head", "t", "head_layers", "conv"}, path


@pytest.mark.parametrize("milestones,epochs,new,expected", [
    ([200, 260], 300, 30, [20, 26]), ([200, 260], 300, 3, [2]), ([200, 260], 300, 1, []),
])
def test_scale_milestones(milestones, epochs, new, expected):
    assert scale_milestones(milestones, epochs, new) == expected


def test_unknown_table_lists_valid_ones(child_env):
    res = subprocess.run([sys.executable, "-m", "dspose_graph", "experiment", "table99"], capture_output=True,
                         text=True, env=child_env())
    assert res.returncode == 2 and "table99" in res.stderr and "table7" in res.stderr


@pytest.mark.slow
def test_tiny_table_run_on_real_images_writes_results(coco_mini, tmp_path, child_env):
    subprocess.run([sys.executable, "-m", "dspose_graph", "experiment", "coco", "--tiny", "--epochs", "1",
                    "--limit", "8", "--data", str(coco_mini), "--out", str(tmp_path),
                    "--set", "optim.batch_size=4", "--set", "run.workers=0", "--set", "run.progress=false"],
                   check=True, capture_output=True, env=child_env())
    rows = list(csv.DictReader(open(tmp_path / "coco" / "results.csv")))
    assert [r["row"] for r in rows] == ["DSPose-B", "TokenPose-B"]
    assert {r["model"] for r in rows} == {"dspose_t", "tokenpose_t"}
    for r in rows:
        assert 0.0 <= float(r["ours"]) <= 100.0 and float(r["params_m"]) > 0.1 and r["paper"]
    md = (tmp_path / "coco" / "results.md").read_text()
    assert "| DSPose-B | dspose_t |" in md and "75.1" in md
