"""Compile kernels.cc on first use, cache the library, register its FFI targets.

The library is built with the machine's C++ compiler (``$CXX``, else ``c++``,
else ``g++``) against the XLA FFI headers that ship with jaxlib, for the CPU it
runs on (``-march=native``). It is cached under ``$GRADTX_CACHE`` (default
``~/.cache/gradtx``), keyed by the source, the jaxlib version and the flags,
and written via a temporary file and a rename, so concurrent processes never
load a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

SOURCE = Path(__file__).with_name("kernels.cc")
TARGETS = ("gradtx_adam", "gradtx_sgd", "gradtx_rmsprop")
# -ffp-contract=fast lets the compiler fuse a*b + c as XLA:CPU does, so results agree to
# rounding; -fno-math-errno lets it vectorise sqrt (errno is never read).
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-std=c++17",
         "-shared", "-fPIC", "-pthread", "-w")  # fmt: skip


class FusedKernelsUnavailable(RuntimeError):
    """The fused CPU kernels could not be built or loaded on this machine."""


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise FusedKernelsUnavailable(
        "gradtx.fused_update needs a C++ compiler to build its CPU kernels once "
        "(none of $CXX, c++, g++, clang++ was found); install one (e.g. g++) or use "
        "learner.update and gradtx.apply_updates"
    )


def _cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradtx"
    return Path(os.environ.get("GRADTX_CACHE", default))


@functools.cache
def library_path() -> Path:
    """Build (once per source, jaxlib and flags) and return the shared library's path."""
    compiler = _compiler()
    key = hashlib.sha256(
        SOURCE.read_bytes() + jaxlib.__version__.encode() + " ".join(FLAGS).encode()
    ).hexdigest()[:16]
    path = _cache_dir() / f"fused-{key}.so"
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable home: build in the temporary directory instead
        path = Path(tempfile.gettempdir()) / f"gradtx-{os.getuid()}" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return path
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        built = Path(scratch) / path.name
        command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise FusedKernelsUnavailable(
                f"gradtx.fused_update: building the CPU kernels failed:\n{' '.join(command)}\n"
                f"{result.stderr[-3000:]}"
            )
        os.replace(built, path)
    return path


@functools.cache
def register() -> None:
    """Load the library and register its kernels with XLA (once per process)."""
    library = ctypes.cdll.LoadLibrary(str(library_path()))
    for name in TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
