"""Errors meant for a person: one type per kind, reported by the CLI in one place."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from lookalike.api import Index
from lookalike.cli import app
from lookalike.errors import (
    CalibrationError,
    IndexLocked,
    InvalidArgument,
    LookalikeError,
    http_status,
)
from lookalike.fetch import FetchError
from lookalike.images import ImageError
from lookalike.models import ModelError

runner = CliRunner()


def test_library_errors_are_typed():
    for kind, status in ((ModelError, 503), (FetchError, 422), (ImageError, 415)):
        assert issubclass(kind, LookalikeError) and http_status(kind("x")) == status
    # ValueError stays a base where callers catch it (a bad option value, a refused fit)
    assert issubclass(InvalidArgument, ValueError) and issubclass(CalibrationError, ValueError)


def _info_raises(monkeypatch, exc: BaseException) -> None:
    def info(self):
        raise exc

    monkeypatch.setattr(Index, "info", info)


def test_a_lookalike_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    _info_raises(monkeypatch, IndexLocked("index /data/[photos] is being written by another process"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1
    message = "error: index /data/[photos] is being written by another process"  # not read as markup
    assert res.stderr.strip() == message
    assert res.stdout == "" and "Traceback" not in res.output


def test_an_os_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    _info_raises(monkeypatch, PermissionError(errno.EACCES, "Permission denied", "/data/catalog.sqlite"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1 and res.stderr.strip() == "error: /data/catalog.sqlite: Permission denied"


def test_an_unexpected_exception_is_not_swallowed(monkeypatch, tmp_path):
    _info_raises(monkeypatch, RuntimeError("a bug"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "a bug"
    assert "error:" not in res.output


def test_a_closed_pipe_is_left_to_click(monkeypatch, tmp_path):
    _info_raises(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1 and "error:" not in res.output


@pytest.mark.parametrize("args", [["--preset", "nope"], ["--threshold", "0.9", "--min-probability", "0.9"]])
def test_dupes_options_that_do_not_go_together_are_usage_errors(monkeypatch, tmp_path, args):
    manifest = SimpleNamespace(model=SimpleNamespace(source="m"), calibration=None)  # what dupes reads
    monkeypatch.setattr(Index, "manifest", lambda self: manifest)
    res = runner.invoke(app, ["dupes", "--index", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
