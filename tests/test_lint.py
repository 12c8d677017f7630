"""The code base stays ruff- and mypy-clean (both are test dependencies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes() -> None:
    # No arguments: mypy checks what [tool.mypy] in pyproject.toml names, as on the command line.
    result = subprocess.run([sys.executable, "-m", "mypy"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
