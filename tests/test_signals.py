"""Interrupted means interrupted (torchlogreg.base.signals): SIGINT and SIGTERM during a command end in
one line and exit 130/143, whatever exception the interruption became inside a library, and leave
no temporary file behind."""

import contextlib
import os
import signal
import types
from pathlib import Path

import pytest

from torchlogreg.apps import export
from torchlogreg.apps.cli import main
from torchlogreg.base import storage

SIGNALS = [signal.SIGINT, signal.SIGTERM]


def _interrupt(signum: int) -> None:
    """Send this process `signum`; Python runs its handler before the next line."""
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_an_interruption_a_library_turns_into_another_error_is_still_one(
    default_run, tmp_path, monkeypatch, capsys, signum
):
    # Ctrl-C while torch's exporter imported torch._dynamo came out as an AttributeError traceback
    def exporter_hit_mid_import(*args, **kwargs):
        try:
            _interrupt(signum)
        except KeyboardInterrupt:
            message = "partially initialized module 'torch._dynamo' has no attribute 'utils'"
            raise AttributeError(message) from None

    monkeypatch.setattr(export, "_check_exporter", lambda: None)
    monkeypatch.setattr(export, "_to_onnx", exporter_hit_mid_import)
    assert main(["export", str(default_run), "--out", str(tmp_path / "m.onnx")]) == 128 + signum
    err = capsys.readouterr().err.strip()
    assert err == f"torchlogreg export: interrupted ({signum.name}); no file was left half-written"
    assert list(tmp_path.iterdir()) == []


class _Proto:
    """Stands in for the exported ONNX model: this test is about the write, not the export."""

    doc_string = ""

    def __init__(self):
        self.metadata_props = types.SimpleNamespace(add=lambda **kwargs: None)

    def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf's name)
        return bytes(4096)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_while_writing_leaves_no_temporary_file(default_run, tmp_path, monkeypatch, capsys, signum):
    # SIGTERM's default action ended the process without cleanup: .tmp files and folders stayed
    def half_written(path, data):
        with storage.atomic_output(path) as file:
            file.write(data[: len(data) // 2])
            _interrupt(signum)

    monkeypatch.setattr(export, "_check_exporter", lambda: None)
    monkeypatch.setattr(export, "_to_onnx", lambda *args: _Proto())
    monkeypatch.setattr(export, "_verify", lambda *a: None)
    monkeypatch.setattr(export, "atomic_write_bytes", half_written)
    assert main(["export", str(default_run), "--out", str(tmp_path / "m.onnx")]) == 128 + signum
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_handlers_are_put_back_after_a_command(default_run, tmp_path, capsys):
    before = {s: signal.getsignal(s) for s in SIGNALS}
    assert main(["export", str(default_run), "--out", str(tmp_path)]) == 2  # a folder: refused
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_an_interruption_a_library_swallows_is_still_reported(default_run, tmp_path, monkeypatch, capsys):
    # Ctrl-C during a sweep exited 0 and reported the sweep as finished
    def swallowing_export(run_dir, out, **options):
        with contextlib.suppress(KeyboardInterrupt):  # what a library that catches everything does
            _interrupt(signal.SIGTERM)
        return Path(out)

    monkeypatch.setattr(export, "export_onnx", swallowing_export)
    assert main(["export", str(default_run), "--out", str(tmp_path / "m.onnx")]) == 143
    assert "interrupted (SIGTERM)" in capsys.readouterr().err
