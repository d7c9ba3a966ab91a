"""Distributed training on CPU: 8 host devices in one process, and two processes over gloo.

JAX fixes its device count when it starts, so each case runs in a fresh
Python process: ``tests/distributed/mesh_cases.py`` under pytest with 8
devices, and ``tests/distributed/worker.py`` once per process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from conftest import SLOW, slow_where

HERE = Path(__file__).resolve().parent / "distributed"


def _env(devices: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("PYTEST")}
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


MESH_SHARDS = 12  # the per-learner cases, split over this many processes


def run_cases(tmp_path, cases: str, *args: str, env: dict | None = None) -> dict:
    """``cases`` (a file in tests/distributed) under pytest on 8 host devices; its totals."""
    report = tmp_path / "report.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}"]
    result = subprocess.run(
        [*command, *args, str(HERE / cases)],
        env={**_env(8), **(env or {})},
        cwd=HERE.parent.parent,  # the repository, for its pytest settings
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    suite = ElementTree.parse(report).getroot().find("testsuite")
    # Nothing skips but the cases marked slow, and those only outside the whole suite.
    reasons = [s.get("message", "") for s in suite.iter("skipped")]
    assert all("GRADTX_SLOW" in r for r in reasons) and not (SLOW and reasons), reasons
    return {"ran": int(suite.get("tests")) - int(suite.get("skipped"))}


# The first shard (every case without a learner, a twelfth of the learners) by default.
@pytest.mark.parametrize("shard", slow_where(range(MESH_SHARDS), lambda shard: shard > 0))
def test_eight_device_cases(tmp_path, shard):
    # The cases that take no learner run once, in shard 0.
    only = ["-k", "mesh_4x2_equals_single_device or explicit_sharding_raises"] if shard else []
    env = {"GRADTX_MESH_SHARD": f"{shard}/{MESH_SHARDS}"}
    assert run_cases(tmp_path, "mesh_cases.py", *only, env=env)["ran"] > 10


def test_orbax_checkpoints_on_eight_devices(tmp_path):
    assert run_cases(tmp_path, "orbax_cases.py")["ran"] >= 7


def test_compressed_mean_on_eight_devices(tmp_path):
    assert run_cases(tmp_path, "compression_cases.py")["ran"] >= 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    process_id: int, num_processes: int, port: int, out: Path, *more: str
) -> subprocess.Popen:
    args = [sys.executable, str(HERE / "worker.py"), str(process_id), str(num_processes)]
    return subprocess.Popen(
        [*args, str(port), str(out), *more],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:  # a hung peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outputs


def test_two_processes_train_like_one(tmp_path):
    port = _free_port()
    two = tmp_path / "two.npz"
    outputs = _finish([_worker(i, 2, port, two) for i in range(2)], timeout=240)
    assert "process 0/2: 8 devices, 4 local" in outputs[0]
    assert "process 1/2: 8 devices, 4 local" in outputs[1]
    one = tmp_path / "one.npz"
    _finish([_worker(0, 1, port, one)], timeout=240)
    with np.load(two) as a, np.load(one) as b:
        assert sorted(a.files) == sorted(b.files)
        assert any(k.startswith("params/") for k in a.files)
        for key in a.files:
            # Not bitwise: gloo sums across processes in another order than XLA within one.
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_two_processes_with_int8_compression_train_like_one(tmp_path):
    """The compressed exchange over gloo (all_to_all and all_gather of uint8 across the
    processes) gives one process's numbers: its float32 sums may add up in another
    order, and a scale that moves by an ulp can move an int8 code by one step."""
    port = _free_port()
    two, one = tmp_path / "two.npz", tmp_path / "one.npz"
    outputs = _finish([_worker(i, 2, port, two, "int8") for i in range(2)], timeout=240)
    assert "process 0/2: 8 devices, 4 local" in outputs[0]
    _finish([_worker(0, 1, port, one, "int8")], timeout=240)
    with np.load(two) as a, np.load(one) as b:
        assert sorted(a.files) == sorted(b.files)
        residuals = [k for k in a.files if "worker_residual" in k]
        assert residuals and a[residuals[0]].shape[0] == 8  # one row per device
        for key in a.files:
            scale = max(np.abs(b[key]).max(), 1e-30)
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5 * scale, err_msg=key)
