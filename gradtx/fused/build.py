"""Compile kernels.cc on first use, cache the library, register its FFI targets.

The library is built with the machine's C++ compiler (``$CXX``, else ``c++``,
else ``g++``, else ``clang++``) against the XLA FFI headers that ship with
jaxlib, for the CPU it runs on (``-march=native``). It is cached under
``$GRADTX_CACHE`` (default ``~/.cache/gradtx``), keyed by the source, the jaxlib
version, the flags and the CPU (:func:`cpu_description`), and written via a
temporary file and a rename, so concurrent processes never load a half-written
library. A cached library is used without looking for a compiler, so a machine
without one runs kernels built there before (or copied into its cache).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib.version  # the same string as jaxlib.__version__, which pyright deems private

from gradtx.fused import layout

SOURCE = Path(__file__).with_name("kernels.cc")
AFTER = "gradtx_after"  # the one target that is not a rule's kernel: see gradtx.fused.after
HEADER = "gradtx_layout.h"  # written from layout.header() beside the build, never stored
# -ffp-contract=fast lets the compiler fuse a*b + c as XLA:CPU does, so results agree to
# rounding; -fno-math-errno lets it vectorise sqrt (errno is never read); -fopenmp-simd
# lets it vectorise the norms' sums (their `omp simd` pragma; no OpenMP runtime);
# -mprefer-vector-width=512 uses AVX-512's full width where -march=native has it (GCC
# prefers 256 bits there): signSGD's 12-byte pass went from 1.33x to 1.19x a triad's time.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast",
         "-fno-math-errno", "-fopenmp-simd", "-std=c++17", "-fPIC", "-pthread", "-w")  # fmt: skip
# One compilation of kernels.cc per moment dtype (layout.MOMENT_DTYPES), run side by side
# (each takes about as long as the other), then linked into one library.
PARTS = {"float32": "-DGRADTX_BF16=0", "bfloat16": "-DGRADTX_BF16=1"}
CPUINFO = Path("/proc/cpuinfo")
# The /proc/cpuinfo fields that name the CPU and its instruction sets, which is what
# -march=native reads: x86's vendor, family, model and flags; Arm's implementer, part
# and features; RISC-V's isa. Clock speeds and core numbers are left out: they vary.
CPUINFO_FIELDS = frozenset({
    "vendor_id", "cpu family", "model", "model name", "flags",
    "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features",
    "isa", "uarch",
})  # fmt: skip


class FusedKernelsUnavailable(RuntimeError):
    """The fused CPU kernels could not be built or loaded on this machine.

    Raised by the build step (:mod:`gradtx.fused.build`); :func:`gradtx.fused_update`
    and the training loops catch it, warn once with a :class:`gradtx.FusedFallbackWarning`
    carrying its message, and take the plain path.
    """


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


def _fallback_dir() -> Path:
    # Where the library goes when the cache directory cannot be written (a read-only home).
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"gradtx-{user}"


def _private(directory: Path) -> bool:
    # A shared temporary directory lets anyone make gradtx-<uid> first and plant a library
    # in it; load from it only if it is ours and nobody else can write to it.
    if not hasattr(os, "getuid"):
        return True
    try:
        info = directory.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def cpu_description() -> str:
    """What ``-march=native`` compiles for: the CPU's model and instruction-set flags.

    On Linux, the model and flag fields of ``/proc/cpuinfo`` (each distinct line
    once, so one CPU's identical cores count once); elsewhere, or when it cannot
    be read, what :mod:`platform` says, plus the brand string ``sysctl`` gives
    on macOS. No compiler is asked: the cache key must be computable on a
    machine without one. Never raises.
    """
    parts = [platform.system(), platform.machine(), platform.processor()]
    try:
        cpuinfo = CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux, or /proc not mounted
        cpuinfo = ""
    fields = set()
    for line in cpuinfo.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() in CPUINFO_FIELDS:
            fields.add(f"{name.strip()}: {' '.join(value.split())}")
    parts += sorted(fields)
    if not fields and platform.system() == "Darwin":
        parts.append(_sysctl("machdep.cpu.brand_string", "machdep.cpu.features"))
    return "\n".join(parts)


def _sysctl(*names: str) -> str:
    try:
        result = subprocess.run(["sysctl", "-n", *names], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def cache_key() -> str:
    """The library's cache key: a hash of the source, the layout, jaxlib, the flags and the CPU."""
    flags = " ".join([*FLAGS, *PARTS.values()])
    described = [SOURCE.read_bytes(), layout.header().encode(), jaxlib.version.__version__.encode(),
                 flags.encode(), cpu_description().encode()]  # fmt: skip
    return hashlib.sha256(b"\0".join(described)).hexdigest()[:16]


@functools.cache
def library_path() -> Path:
    """The shared library's path: the cached one if there is one, else built (a few seconds).

    Raises:
      FusedKernelsUnavailable: nothing is cached for this source, jaxlib, flags and
        CPU, and there is no compiler or the build failed.
    """
    name = f"fused-{cache_key()}.so"
    cache, fallback = _cache_dir(), _fallback_dir()
    if (cache / name).exists():
        return cache / name
    if (fallback / name).exists() and _private(fallback):
        return fallback / name
    compiler = _compiler()
    for directory in (cache, fallback):
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if directory == fallback and not _private(directory):
                continue
            scratch = tempfile.TemporaryDirectory(dir=directory)
        except OSError:  # an unwritable cache: try the next directory
            continue
        with scratch:
            return _build(compiler, Path(scratch.name) / name, directory / name)
    raise FusedKernelsUnavailable(
        f"gradtx.fused_update: no writable directory for its CPU kernels (tried "
        f"{cache} and {fallback}); set $GRADTX_CACHE to one"
    )


def _build(compiler: str, scratch: Path, path: Path) -> Path:
    (scratch.parent / HEADER).write_text(layout.header())
    includes = [f"-I{jax.ffi.include_dir()}", f"-I{scratch.parent}"]
    objects = [scratch.with_suffix(f".{dtype}.o") for dtype in PARTS]
    compiles = [
        [compiler, *FLAGS, define, *includes, "-c", str(SOURCE), "-o", str(obj)]
        for define, obj in zip(PARTS.values(), objects, strict=True)
    ]
    _run(compiler, *compiles)
    _run(compiler, [compiler, *FLAGS, "-shared", *map(str, objects), "-o", str(scratch)])
    os.replace(scratch, path)
    return path


def _run(compiler: str, *commands: list[str]) -> None:
    """Run the compiler commands side by side; raise if one cannot run or fails."""
    try:
        running = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    except OSError as error:  # found on PATH but not runnable
        raise FusedKernelsUnavailable(
            f"gradtx.fused_update: could not run the compiler {compiler}: {error}"
        ) from error
    for command, process in zip(commands, running, strict=True):
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise FusedKernelsUnavailable(
                f"gradtx.fused_update: building the CPU kernels failed:\n{' '.join(command)}\n"
                f"{stderr[-3000:]}"
            )


@functools.cache
def registration_error() -> FusedKernelsUnavailable | None:
    """Load the library and register its kernels (once per process); why not, if they cannot be.

    The outcome is kept either way: a failed build would otherwise be retried
    (seconds) by every trace of every fused step in the process (see :func:`forget`).
    """
    try:
        path = library_path()
        try:
            library = ctypes.cdll.LoadLibrary(str(path))
            targets = [*layout.symbols(), AFTER]
            kernels = [getattr(library, name) for name in targets]
        except (OSError, AttributeError) as error:
            raise FusedKernelsUnavailable(
                f"gradtx.fused_update: the CPU kernels in {path} could not be loaded ({error}); "
                f"delete the file to rebuild it"
            ) from error
    except FusedKernelsUnavailable as error:
        return error
    for name, kernel in zip(targets, kernels, strict=True):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(kernel), platform="cpu")
    return None


def register() -> None:
    """Load the library and register its kernels with XLA (once per process).

    Raises:
      FusedKernelsUnavailable: the library could not be built or loaded; later
        calls raise the same error without trying again (see :func:`forget`).
    """
    error = registration_error()
    if error is not None:
        raise error


def forget() -> None:
    """Forget the library's path and whether it loaded, so the next use looks again.

    For a process that has since installed a compiler or changed ``$GRADTX_CACHE``,
    and for tests. Kernels already registered with XLA stay registered.
    """
    library_path.cache_clear()
    registration_error.cache_clear()
