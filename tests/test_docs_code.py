"""Every code block in the guides runs.

Each page's ```python blocks run in order in one namespace, in a fresh
interpreter with 8 host devices (the distributed guide needs a mesh), in a
scratch directory. Tracebacks point at the page and its line. A block that only
includes a part of an example (``--8<-- "examples/x.py:section"``) runs as part
of that example in ``tests/test_examples.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import load_script, slow_where

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)")
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')


def code_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(first line number of the code, language, dedented code) for each fenced block."""
    blocks, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, start, i = match["indent"], i + 2, i + 1
        while not lines[i].startswith(indent + "```"):
            i += 1
        blocks.append((start, match["lang"], textwrap.dedent("\n".join(lines[start - 1 : i]))))
        i += 1
    return blocks


def is_snippet(code: str) -> bool:
    return all(SNIPPET.match(line.strip()) for line in code.strip().splitlines())


GUIDES = sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)
PAGES = [ROOT / "README.md", *GUIDES]  # the README's first look runs too

RUNNER = """
import sys
namespace = {"__name__": "__main__"}
for path, line, code in BLOCKS:
    exec(compile("\\n" * (line - 1) + code, path, "exec"), namespace)
"""


# The pages whose code takes longest (a learner of each kind trained, optax's calls compared,
# L-BFGS to convergence, the modern learners' comparison, torch's loops beside gradtx's, the
# fused kernels timed): the whole suite's.
SLOW_PAGES = {"learners.md", "optax.md", "lbfgs.md", "modern_learners.md", "torch.md",
              "performance.md"}  # fmt: skip


@pytest.mark.parametrize(
    "page",
    slow_where(PAGES, lambda page: page.name in SLOW_PAGES),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_guide_code_runs(page, tmp_path):
    blocks = [
        (str(page), line, code)
        for line, lang, code in code_blocks(page)
        if lang == "python" and not is_snippet(code)
    ]
    if not blocks:
        pytest.skip("no Python code on this page")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT / "examples"))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCKS = {blocks!r}\n{RUNNER}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_included_snippets_exist_and_come_from_tested_examples():
    """An included section exists, and its file is an example that test_examples runs."""
    tested = (ROOT / "tests" / "test_examples.py").read_text()
    for page in GUIDES:
        for _, _, code in code_blocks(page):
            if not is_snippet(code):
                continue
            for line in code.strip().splitlines():
                match = SNIPPET.match(line.strip())
                path = ROOT / match["path"]
                assert path.is_file(), f"{page}: {match['path']} does not exist"
                assert path.parent == ROOT / "examples" and path.stem in tested, (
                    f"{page}: {match['path']} is not an example run by tests/test_examples.py"
                )
                if match["section"]:
                    assert f"--8<-- [start:{match['section']}]" in path.read_text(), (
                        f"{page}: {match['path']} has no section {match['section']!r}"
                    )


def test_the_block_reader_sees_indented_and_plain_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("x\n```python\na = 1\n```\n!!! note\n    ```python\n    b = a\n    ```\n")
    assert code_blocks(page) == [(3, "python", "a = 1"), (7, "python", "b = a")]
    assert is_snippet('--8<-- "examples/quickstart.py:loop"')
    assert not is_snippet("print(1)")


def _docs_module(name: str):
    """A helper script of docs/ (not a package)."""
    return load_script(DOCS / f"{name}.py")


def test_every_picture_is_regenerated_by_an_example():
    """docs/assets holds exactly the pictures the script draws, and the pages use only those."""
    EXAMPLES = _docs_module("regenerate_assets").EXAMPLES
    assert {p.name for p in (DOCS / "assets").glob("*.png")} == set(EXAMPLES)
    used = {name for page in GUIDES for name in re.findall(r"\(assets/([\w.]+)\)",
                                                           page.read_text())}  # fmt: skip
    assert used <= set(EXAMPLES)
    for example in EXAMPLES.values():
        source = (ROOT / "examples" / example).read_text()
        assert '"--out"' in source, f"examples/{example} takes no --out"


def test_docstring_math_becomes_markdown_math_for_the_api_page():
    rst_to_markdown = _docs_module("griffe_rst").rst_to_markdown
    text = "Adam.\n\n.. math::\n    m_t = b m + g, \\quad\n    u = m\n\n"
    text += "Args:\n  b1: :math:`\\beta_1`."
    assert rst_to_markdown(text) == (
        "Adam.\n\n\n$$\nm_t = b m + g, \\quad\nu = m\n$$\n\n\nArgs:\n  b1: $\\beta_1$."
    )
    assert rst_to_markdown(".. math:: u = -g") == "\n$$\nu = -g\n$$\n"
    assert rst_to_markdown("see :func:`gradtx.sgd` and :class:`~gradtx.Trainer`") == (
        "see `gradtx.sgd` and `gradtx.Trainer`"
    )
