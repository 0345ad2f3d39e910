"""Build of ALTER's C++ CPU kernels, the extension ``alter_kernels._C`` (sources in ``csrc/``).

The package metadata lives in pyproject.toml; this file only defines the extension and how it
is compiled. The kernels use no torch headers (they take raw data pointers), so torch is not a
build requirement: only setuptools, pybind11 and, optionally, ninja.

Environment variables:
    ALTER_NO_NATIVE=1   compile without -march=native (a binary for any x86-64 / aarch64 CPU).
    ALTER_SKIP_CPP=1    install without the extension; alter_kernels then runs its PyTorch
                        fallback on CPU. Without it, a failed C++ build fails the install.
    CXX                 the C++ compiler (default: Python's configured CXX, else ``c++``).

Object files are compiled by ninja when it is installed (in parallel, incrementally); otherwise
by setuptools' own compiler driver, with the same flags.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
EXT_NAME = "alter_kernels._C"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _compile_flags() -> list[str]:
    flags = ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", "-fopenmp",
             # -fno-math-errno and -fno-trapping-math let GCC vectorise the exp loops
             "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra"]
    if not _env_flag("ALTER_NO_NATIVE"):
        flags.append("-march=native")
    return flags


LINK_FLAGS = ["-fopenmp"]


def _include_dirs() -> list[str]:
    import pybind11

    return [pybind11.get_include(), sysconfig.get_paths()["include"], str(CSRC)]


def _cxx() -> list[str]:
    cxx = os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    return shlex.split(cxx)


def _find_ninja() -> str | None:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja
    except ImportError:
        return None
    candidate = Path(ninja.BIN_DIR) / "ninja"
    return str(candidate) if candidate.exists() else None


def _ninja_escape(path: str) -> str:
    return path.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


class BuildExt(build_ext):
    """build_ext that compiles with ninja when available and fails with a clear message."""

    def build_extension(self, ext: Extension) -> None:
        try:
            ninja = _find_ninja()
            if ninja:
                self._build_with_ninja(ext, ninja)
            else:
                print(f"ninja not found: compiling {ext.name} with setuptools")
                ext.include_dirs = _include_dirs() + list(ext.include_dirs)
                ext.extra_compile_args = _compile_flags()
                ext.extra_link_args = LINK_FLAGS
                super().build_extension(ext)
        except Exception as exc:
            raise RuntimeError(
                f"building the C++ extension {ext.name} (csrc/) failed: {exc}\n"
                "Fix the compiler error above, or set ALTER_SKIP_CPP=1 to install without the C++ kernels "
                "(alter_kernels then runs its PyTorch fallback on CPU). ALTER_NO_NATIVE=1 drops -march=native; "
                "CXX picks the compiler."
            ) from exc

    def _build_with_ninja(self, ext: Extension, ninja: str) -> None:
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = Path(self.build_temp).resolve() / "alter_csrc"
        build_dir.mkdir(parents=True, exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        cflags = _compile_flags() + [f"-I{d}" for d in _include_dirs()]
        lines = [
            "ninja_required_version = 1.3",
            f"cxx = {' '.join(shlex.quote(a) for a in _cxx())}",
            f"cflags = {' '.join(shlex.quote(a) for a in cflags)}",
            f"ldflags = {' '.join(LINK_FLAGS)}",
            "rule cxx",
            "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CXX $in",
            "rule link",
            "  command = $cxx -shared $in $ldflags -o $out",
            "  description = LINK $out",
        ]
        objects = []
        for source in ext.sources:
            src = (ROOT / source).resolve()
            obj = build_dir / (src.stem + ".o")
            objects.append(obj)
            lines.append(f"build {_ninja_escape(str(obj))}: cxx {_ninja_escape(str(src))}")
        lines.append(f"build {_ninja_escape(str(out))}: link {' '.join(_ninja_escape(str(o)) for o in objects)}")
        lines.append(f"default {_ninja_escape(str(out))}")
        (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        jobs = str(max(1, os.cpu_count() or 1))
        subprocess.run([ninja, "-C", str(build_dir), "-j", jobs], check=True)


def _extensions() -> list[Extension]:
    if _env_flag("ALTER_SKIP_CPP"):
        # an earlier in-place build would still be imported: remove it, so that the install
        # really is the PyTorch fallback
        for stale in (ROOT / "alter_kernels").glob("_C.*"):
            if stale.suffix in (".so", ".pyd", ".dylib"):
                stale.unlink()
        print(f"ALTER_SKIP_CPP=1: not building {EXT_NAME}; alter_kernels will use its PyTorch fallback on CPU")
        return []
    sources = sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("*.cpp"))
    headers = sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("*.h"))
    return [Extension(EXT_NAME, sources=sources, depends=headers, language="c++")]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
