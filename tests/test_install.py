"""The install contract: setup.cfg states ranges and needs no compiler; constraints.txt pins one version of each
dependency inside those ranges, and both make and CI install through it."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact NAME==VERSION pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_required_packages_are_ranges_without_torch_scatter():
    required = _requirements(_setup_cfg()["options"]["install_requires"])
    names = {canonicalize_name(r.name) for r in required}
    assert "torch-scatter" not in names  # compiled from source: an extra, never a requirement
    for req in required:
        assert not any(spec.operator == "==" for spec in req.specifier), f"setup.cfg pins {req}: state a range"
    torch_req = next(r for r in required if r.name == "torch")
    assert "2.3" in torch_req.specifier and "2.2.2" not in torch_req.specifier


def test_extras_name_what_they_bring():
    extras = {name: {canonicalize_name(r.name) for r in _requirements(text)}
              for name, text in _setup_cfg()["options.extras_require"].items()}
    assert extras["scatter"] == {"torch-scatter"}
    assert {"onnx", "onnxruntime"} <= extras["onnx"]
    assert {"onnx", "onnxruntime", "pytest"} <= extras["dev"]


def test_constraints_pin_every_dependency_inside_its_range():
    cfg = _setup_cfg()
    pins = _pins()
    wanted = _requirements(cfg["options"]["install_requires"])
    for text in cfg["options.extras_require"].values():
        wanted += _requirements(text)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt has no pin for {req.name} (setup.cfg: {req})"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]} outside setup.cfg's range {req}"


def test_make_and_ci_install_through_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS := constraints.txt$", makefile, re.M)
    installs = [line for line in makefile.splitlines() if "$(PIP) install" in line and "--upgrade pip" not in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs)
    # A failed torch-scatter build warns and the install goes on.
    scatter = next(line for line in installs if "torch-scatter" in line)
    rule = makefile[makefile.index(scatter):].split("\n\n")[0]
    assert "|| echo \"WARNING" in rule
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^test: .*\$\(SCATTER_STAMP\)", makefile, re.M)
