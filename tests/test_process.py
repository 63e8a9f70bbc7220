"""Process-level facilities (``dspose_graph.process``): rank-tagged logs under torchrun, torchrun's error file,
SIGTERM raised as a ``KeyboardInterrupt``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dspose_graph.process import Terminated, record_error, sigterm_as_interrupt, terminated

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("log_ranks,rank,expected", [
    ("main", "0", "INFO [rank 0/2] x: progress\nWARNING [rank 0/2] x: careful\n"),
    ("main", "1", "WARNING [rank 1/2] x: careful\n"),
    ("all", "1", "INFO [rank 1/2] x: progress\nWARNING [rank 1/2] x: careful\n"),
])
def test_under_torchrun_rank_0_logs_and_every_line_names_its_rank(log_ranks, rank, expected, child_env):
    script = ("import logging\n"
              "from dspose_graph.process import configure_logging\n"
              f"configure_logging(False, {log_ranks!r}, {{'WORLD_SIZE': '2', 'RANK': {rank!r}}})\n"
              "logging.getLogger('x').info('progress')\n"
              "logging.getLogger('x').warning('careful')\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), cwd=REPO)
    assert res.stderr == expected


def test_a_single_process_logs_untagged_at_info_or_debug(child_env):
    script = ("import logging\n"
              "from dspose_graph.process import configure_logging\n"
              "configure_logging(True, 'main', {'WORLD_SIZE': '1', 'RANK': '0'})\n"
              "logging.getLogger('x').debug('detail')\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), cwd=REPO)
    assert res.stderr == "DEBUG x: detail\n"


def test_record_error_writes_torchruns_json(tmp_path):
    try:
        raise ValueError("bad field 'x' in a.json")
    except ValueError as e:
        record_error(e, {"TORCHELASTIC_ERROR_FILE": str(tmp_path / "error.json")})
    record = json.loads((tmp_path / "error.json").read_text())["message"]
    assert record["message"] == "ValueError: bad field 'x' in a.json"
    assert "Traceback" in record["extraInfo"]["py_callstack"]
    assert "raise ValueError" in record["extraInfo"]["py_callstack"]
    assert int(record["extraInfo"]["timestamp"]) > 0


def test_record_error_does_nothing_outside_torchrun_and_logs_an_unwritable_file(tmp_path, caplog):
    record_error(ValueError("x"), {})
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "a folder"
    folder.mkdir()
    with caplog.at_level(logging.ERROR, logger="dspose_graph.process"):
        record_error(ValueError("x"), {"TORCHELASTIC_ERROR_FILE": str(folder)})
    assert f"could not write torchrun's error file {folder}" in caplog.text


def test_sigterm_inside_raises_terminated_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    assert not terminated()
    with pytest.raises(Terminated) as caught:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not before
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
                raise AssertionError("SIGTERM did not interrupt")
            finally:
                assert terminated()
    assert isinstance(caught.value, KeyboardInterrupt), "every Ctrl-C clean-up applies"
    assert not terminated(), "the record ends with the block"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_sigterm_does_not_cut_the_clean_up_short():
    cleaned = []
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # during the clean-up: recorded, not raised
                cleaned.append(terminated())
    assert cleaned == [True]
