"""Builds, loads and registers the vpsadbw CPU kernel (csrc/adder_sad.cc) behind
`adder2d_int(impl='ffi')`.

The kernel is compiled on first use into a cache directory ($ADDERNET_CACHE_DIR, else
$XDG_CACHE_HOME/addernet_jax, else ~/.cache/addernet_jax), against the FFI headers of the jax
that will load it (`jax.ffi.include_dir()`), and registered with XLA as an FFI target. `make
setup` builds it once ahead of time (`python -m addernet_jax.ops.sad_kernel`); any later change
of the source, the compiler or the jax version builds a new library beside the old one.

Why compile on first use rather than a setuptools extension or a Makefile step:
  - the library is built against exactly the installed jaxlib's headers. A setuptools extension
    would be compiled inside pip's isolated build environment, against whatever jax it
    downloads there (or against none when offline), and would have to be rebuilt by hand after
    `pip install -U jax`;
  - it works for every install (editable, wheel, a bare checkout on PYTHONPATH), and `make
    setup` only warms the cache;
  - every reason it cannot run (not x86-64, no AVX-512BW, no C++ compiler, a failed compile,
    $ADDERNET_NO_FFI_KERNEL=1) is one line in `unavailable_reason()`, and `impl='auto'` then
    uses the XLA path: nothing breaks on a machine that cannot build or run the kernel.
A library is written to a temporary file and renamed into place, so concurrent first uses
(several test processes) never load a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax

SOURCE = Path(__file__).resolve().parent / "csrc" / "adder_sad.cc"
TARGET_NAME = "addernet_adder_sad"
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 300
_X86_64 = ("x86_64", "amd64")

_lock = threading.Lock()
_state: dict = {}  # 'library' (the loaded ctypes.CDLL) or 'reason' (why not), once decided


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or run here; the message says why, in one line."""


def cache_dir() -> Path:
    """Where compiled libraries are kept (see the module docstring)."""
    if os.environ.get("ADDERNET_CACHE_DIR"):
        return Path(os.environ["ADDERNET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "addernet_jax"


def find_compiler() -> str:
    """$CXX, else the first of c++, g++, clang++ on the PATH; KernelUnavailable if none."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise KernelUnavailable(f"no C++ compiler found (tried {', '.join(candidates)}; set CXX)")


def compile_command(compiler: str, output: Path) -> list[str]:
    """The command that builds the library at `output`."""
    return [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(output)]


def library_path(compiler: str) -> Path:
    """The cached library for this source, compiler and jax version."""
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join([compiler, *FLAGS, jax.__version__, sys.platform]).encode())
    return cache_dir() / f"adder_sad-{key.hexdigest()[:16]}.so"


def platform_problem() -> str | None:
    """Why this machine cannot run the kernel at all, or None."""
    if os.environ.get("ADDERNET_NO_FFI_KERNEL") == "1":
        return "disabled by ADDERNET_NO_FFI_KERNEL=1"
    if platform.machine().lower() not in _X86_64:
        return f"the kernel needs an x86-64 CPU with AVX-512BW, this is {platform.machine()}"
    if sys.platform not in ("linux", "darwin"):
        return f"the kernel is built on Linux and macOS only, this is {sys.platform}"
    return None


def build(*, force: bool = False) -> Path:
    """Compiles the kernel into the cache (unless it is there already) and returns its path.

    Raises:
      KernelUnavailable: no compiler, or the compile failed (its first error line quoted).
    """
    compiler = find_compiler()
    target = library_path(compiler)
    if target.is_file() and not force:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            partial = Path(scratch) / target.name
            _compile(compiler, partial)
            os.replace(partial, target)
    except OSError as e:
        raise KernelUnavailable(f"cannot write the kernel cache {target.parent} ({e}); set "
                                "ADDERNET_CACHE_DIR to a writable directory") from e
    return target


def _compile(compiler: str, output: Path) -> None:
    """Runs the compiler; KernelUnavailable quoting its first error line when it fails."""
    try:
        result = subprocess.run(compile_command(compiler, output), capture_output=True,
                                text=True, timeout=COMPILE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelUnavailable(f"compiling {SOURCE.name} failed: {e}") from e
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        raise KernelUnavailable(f"compiling {SOURCE.name} with {compiler} failed: "
                                f"{(errors or result.stderr.splitlines() or ['?'])[0]}")


def _load() -> ctypes.CDLL:
    """Builds if needed, loads, checks the CPU and registers the FFI target."""
    problem = platform_problem()
    if problem:
        raise KernelUnavailable(problem)
    library = ctypes.CDLL(str(build()))
    if not library.AdderSadSupported():
        raise KernelUnavailable("this CPU has no AVX-512BW (the kernel needs vpsadbw on "
                                "512-bit vectors)")
    jax.ffi.register_ffi_target(TARGET_NAME, jax.ffi.pycapsule(library.AdderSad),
                                platform="cpu")
    return library


def ensure_loaded() -> None:
    """Makes the kernel callable (once per process).

    Raises:
      KernelUnavailable: why it cannot be used here (the same reason on every later call).
    """
    with _lock:
        if not _state:
            try:
                _state["library"] = _load()
            except (KernelUnavailable, OSError) as e:
                _state["reason"] = str(e).splitlines()[0]
        if "reason" in _state:
            raise KernelUnavailable(_state["reason"])


def unavailable_reason() -> str | None:
    """None when the kernel can be used (building and loading it if needed), else why not."""
    try:
        ensure_loaded()
    except KernelUnavailable as e:
        return str(e)
    return None


def available() -> bool:
    """Whether `adder2d_int(impl='ffi')` can run on this machine."""
    return unavailable_reason() is None


def main() -> int:
    """`python -m addernet_jax.ops.sad_kernel`: build the kernel now and say whether it runs.

    Exit status 0 either way (the XLA path is the fallback), 1 with --strict when unavailable.
    """
    reason = unavailable_reason()
    if reason is None:
        print(f"int8 adder kernel: ready ({library_path(find_compiler())})")
        return 0
    print(f"int8 adder kernel: unavailable, adder2d_int uses the XLA path ({reason})")
    return 1 if "--strict" in sys.argv[1:] else 0


if __name__ == "__main__":
    sys.exit(main())
