"""The README's two commands stay the ones CI runs, and its code sample works."""

from __future__ import annotations

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = [b.strip() for b in _blocks("bash")]
    assert len(commands) == 2
    demo, tests = commands
    assert "examples/quickstart.py" in demo and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_python_sample_converges():
    (sample,) = _blocks("python")
    namespace: dict = {}
    exec(compile(sample, "README.md", "exec"), namespace)
    params = namespace["params"]
    np.testing.assert_allclose(params["w"], jnp.ones(3), atol=1e-2)
    np.testing.assert_allclose(params["b"], 0.0, atol=1e-2)
