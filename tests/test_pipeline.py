"""README's "Train and evaluate from Python" snippet, run as written on a tiny synthetic set the test generates."""

from __future__ import annotations

import re
from pathlib import Path

from dspose_graph.data.synthetic import generate_dataset
from dspose_graph.models.checkpoint import load_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"
MARKERS = r"<!-- python-train-snippet -->\s*```python\n(.*?)```\s*<!-- /python-train-snippet -->"


def readme_snippet() -> str:
    match = re.search(MARKERS, README.read_text(), flags=re.S)
    assert match, f"{README}: no python-train-snippet block"
    return match.group(1)


def test_snippet_is_short():
    assert len(readme_snippet().strip().splitlines()) <= 10


def test_readme_train_snippet_runs(tmp_path, monkeypatch, capsys):
    import dspose_graph.train.evaluate  # noqa: F401  (as in a full test run: the submodule is already loaded)

    monkeypatch.chdir(tmp_path)
    generate_dataset(tmp_path / "data" / "synthetic", 8, 4, image_size=(96, 128), seed=1)
    namespace: dict = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    result, metrics = namespace["result"], namespace["metrics"]
    assert result.epochs == 1 and result.global_step == 2 and result.last == Path("runs/python/last.pt")
    assert result.params == sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert 0.0 <= metrics["AP"] <= 1.0 and set(result.metrics) == set(metrics)
    state = load_checkpoint(result.last)
    assert state["inference"] == {"input_size": [96, 128], "heatmap_size": [24, 32], "codec": "tokenpose"}
    assert capsys.readouterr().out.split()[:2] == [str(result.params), "1"]
