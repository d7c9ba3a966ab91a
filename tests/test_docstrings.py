"""Every public name has a docstring, and every public function with arguments an Args section.

Every learner and block also cites where it comes from (References) and shows an
example that runs here as a doctest; every public state says what it holds. The
API reference (docs/api/index.md, built by mkdocstrings) is made of these.
"""

from __future__ import annotations

import collections
import doctest
import importlib
import inspect
import pkgutil

import pytest

import gradtx
import gradtx.testing

SUBMODULES = ("cntk", "contrib", "learners", "schedules", "torch_optim", "training",
              "transforms")  # fmt: skip
PUBLIC = [
    *(("gradtx", n) for n in gradtx.__all__ if n not in SUBMODULES),
    # optax.contrib's learners are also at gradtx's top level: listed once, there.
    *(("gradtx.contrib", n) for n in gradtx.contrib.__all__ if n not in gradtx.__all__),
    *(("gradtx.schedules", n) for n in gradtx.schedules.__all__ if n != "shapes"),
    *(("gradtx.cntk", n) for n in gradtx.cntk.__all__),
    *(("gradtx.torch_optim", n) for n in gradtx.torch_optim.__all__),
    *(("gradtx.testing", n) for n in ("CheckFailed", "check_transform", "check_schedule",
                                      "pytrees", "hyperparameters")),
]  # fmt: skip
MODULES = {"gradtx": gradtx, "gradtx.schedules": gradtx.schedules, "gradtx.cntk": gradtx.cntk,
           "gradtx.contrib": gradtx.contrib, "gradtx.testing": gradtx.testing,
           "gradtx.torch_optim": gradtx.torch_optim}  # fmt: skip


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


# --- Examples that run, and where each learner and block comes from --------------------------

DOCTEST_MODULES = ["gradtx", *(m.name for m in pkgutil.walk_packages(gradtx.__path__, "gradtx."))]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    """Every ``>>>`` example in the package prints what its docstring says it prints."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report: list[str] = []
    # Empty globals: an example imports what it uses, so a reader can paste it as it is.
    for test in doctest.DocTestFinder().find(module, name, globs={}):
        runner.run(test, out=report.append)
    assert runner.failures == 0, f"{name}: docstring examples failed\n" + "".join(report)


def _returns_a_transform(obj) -> bool:
    return inspect.isfunction(obj) and "GradientTransformation" in str(
        inspect.signature(obj).return_annotation
    )


# Public learners and blocks: the factories that return a transform, plus those whose
# signature does not say so. Schedules, fused, packed, pack and the training tools are
# documented on their own terms.
BLOCK_EXTRAS = {"partition", "inject_hyperparams", "GradientTransformation", "apply_updates"}
BLOCKS = [
    *(("gradtx", n) for n in gradtx.__all__
      if n in BLOCK_EXTRAS or _returns_a_transform(getattr(gradtx, n))),
    *(("gradtx.cntk", n) for n in gradtx.cntk.__all__
      if _returns_a_transform(getattr(gradtx.cntk, n))),
    *(("gradtx.contrib", n) for n in gradtx.contrib.__all__
      if _returns_a_transform(getattr(gradtx.contrib, n))),
]  # fmt: skip
# Blocks that neither a paper nor optax or torch defines: an example, but nothing to cite.
NOTHING_TO_CITE = {("gradtx", "float_leaves")}


def test_the_block_list_finds_the_learners():
    names = {n for _, n in BLOCKS}
    assert names >= {"sgd", "adam", "chain", "scale_by_adam", "partition", "lookahead", "fsadagrad"}
    assert not names & {"packed", "pack", "fused_update", "make_train_step", "sweep"}


@pytest.mark.parametrize("module,name", BLOCKS)
def test_learners_and_blocks_cite_a_source_and_show_an_example(module, name):
    doc = inspect.getdoc(getattr(MODULES[module], name))
    assert ">>>" in doc, f"{module}.{name}: its docstring has no example"
    if (module, name) not in NOTHING_TO_CITE:
        assert "References:" in doc, f"{module}.{name}: its docstring has no References section"


STATES = [n for n in gradtx.__all__ if (n.endswith(("State", "Info")) and n != "State")
          or n == "Progress"]  # fmt: skip


@pytest.mark.parametrize("name", STATES)
def test_public_states_say_what_they_hold(name):
    cls = getattr(gradtx, name)
    assert inspect.isclass(cls) and hasattr(cls, "_fields"), f"gradtx.{name} is not a NamedTuple"
    generated = collections.namedtuple(name, cls._fields).__doc__  # "Name(field, ...)"
    assert cls.__doc__ and cls.__doc__ != generated, (
        f"gradtx.{name} has only the generated docstring {generated!r}; give it one line"
    )
