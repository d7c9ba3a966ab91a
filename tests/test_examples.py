"""The examples run and reach the figures their docs promise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_ninety_percent():
    accuracy = _load("quickstart").main(epochs=20)
    assert accuracy > 0.9


def test_schedules_gallery_writes_its_png(tmp_path):
    out = tmp_path / "gallery.png"
    _load("schedules_gallery").main(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
