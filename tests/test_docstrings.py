"""Every public name has a docstring, and every public function with arguments an Args section.

The API reference (docs/api/index.md, built by mkdocstrings) is made of these.
"""

from __future__ import annotations

import inspect

import pytest

import gradtx
import gradtx.testing

PUBLIC = [
    *(("gradtx", n) for n in gradtx.__all__ if n not in ("cntk", "schedules", "training")),
    *(("gradtx.schedules", n) for n in gradtx.schedules.__all__ if n != "shapes"),
    *(("gradtx.cntk", n) for n in gradtx.cntk.__all__),
    *(("gradtx.testing", n) for n in ("CheckFailed", "check_transform", "check_schedule",
                                      "pytrees", "hyperparameters")),
]  # fmt: skip
MODULES = {"gradtx": gradtx, "gradtx.schedules": gradtx.schedules, "gradtx.cntk": gradtx.cntk,
           "gradtx.testing": gradtx.testing}  # fmt: skip


@pytest.mark.parametrize("module,name", PUBLIC)
def test_public_name_is_documented(module, name):
    obj = getattr(MODULES[module], name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        pytest.skip("a type alias (no docstring to carry)")
    doc = inspect.getdoc(obj)
    assert doc, f"{module}.{name} has no docstring"
    if inspect.isfunction(obj) and inspect.signature(obj).parameters:
        assert "Args:" in doc, f"{module}.{name}: its docstring has no Args section"


def test_public_names_are_not_shadowed_by_modules():
    """A submodule imported after a function of the same name replaces it on the package."""
    import types

    for module, name in PUBLIC:
        assert not isinstance(getattr(MODULES[module], name), types.ModuleType), (
            f"{module}.{name} is a module, not what __all__ promises"
        )


def test_the_api_page_lists_every_public_name():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "api" / "index.md").read_text()
    for module, name in PUBLIC:
        assert f"::: {module}.{name}\n" in page, f"docs/api/index.md lacks {module}.{name}"


def test_the_learners_page_states_the_real_defaults():
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "learners.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|$", page, re.MULTILINE))
    assert set(rows) >= {"sgd", "adam", "adamw", "rmsprop", "adagrad", "lion"}
    for name, text in rows.items():
        parameters = inspect.signature(getattr(gradtx, name)).parameters.items()
        actual = ", ".join(
            f"{k}={p.default!r}" for k, p in parameters if p.default is not inspect.Parameter.empty
        )
        assert text == actual, f"docs/learners.md: {name}'s defaults are {actual}"
