"""``dspose --version``: the package version, printed without importing the commands (torch among them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dspose_graph
from dspose_graph.cli.main import main

REPO = Path(__file__).resolve().parent.parent


def test_version_prints_the_package_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dspose {dspose_graph.__version__}"


def test_version_imports_no_command_module(child_env):
    # A fresh interpreter: the version comes back without torch or any sub-command module loaded.
    code = ("import sys\nfrom dspose_graph.cli.main import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('dspose_graph.cli.') "
            "and m != 'dspose_graph.cli.main'))")
    env = {**child_env(), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"dspose {dspose_graph.__version__}", "[]"]


def test_version_matches_the_changelog_and_citation():
    # The three places a release number is written agree.
    changelog = (REPO / "CHANGELOG.md").read_text()
    citation = (REPO / "CITATION.cff").read_text()
    first_release = next(line for line in changelog.splitlines() if line.startswith("## ["))
    assert first_release.startswith(f"## [{dspose_graph.__version__}]"), first_release
    assert f'\nversion: "{dspose_graph.__version__}"\n' in citation
