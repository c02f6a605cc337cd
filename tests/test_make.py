"""`make` makes the venv with a supported Python it finds by itself (the same versions pyproject.toml accepts)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make")


def make(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``make setup`` on a PATH of ``path`` only, for a venv that does not exist yet."""
    return subprocess.run([MAKE, "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}", *args],
                          env={"PATH": str(path), "HOME": str(tmp_path)}, capture_output=True, text=True)


def fake_path(tmp_path: Path, **links: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in {"java": shutil.which("java") or "/bin/true", **links}.items():
        (bin_dir / name).symlink_to(target)
    return bin_dir


def test_make_and_pyproject_name_the_same_pythons() -> None:
    supported = re.search(r"^PY_SUPPORTED := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert [f"3.{m}" for m in range(6, 30) if spec.contains(f"3.{m}")] == supported
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in supported


def test_a_plain_python3_is_used_when_it_is_supported(tmp_path: Path) -> None:
    out = make(fake_path(tmp_path, python3=sys.executable), tmp_path, "-n")  # no python3.11 on this PATH
    assert out.returncode == 0, out.stderr
    assert f"python3 -m venv {tmp_path / 'venv'}" in out.stdout
    # `make PYTHON=...` wins over what it finds
    out = make(tmp_path / "bin", tmp_path, "-n", "PYTHON=/opt/py/bin/python3.13")
    assert f"/opt/py/bin/python3.13 -m venv {tmp_path / 'venv'}" in out.stdout and "python3 -m" not in out.stdout


def test_no_supported_python_is_a_clear_message(tmp_path: Path) -> None:
    # a python3 that is too old, and a python3.12 that fails to run (a pyenv shim of a version not selected)
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\nexit 1\n")  # its version check fails, as a Python 3.10 or a broken shim does
    old.chmod(0o755)
    out = make(fake_path(tmp_path, python3=str(old), **{"python3.12": str(old)}), tmp_path)
    assert out.returncode != 0
    assert "No supported Python found: the project needs Python 3.11 to 3.13" in out.stderr
    assert "make PYTHON=" in out.stderr
    assert not (tmp_path / "venv").exists()
