"""The manual, the help text and the parser stay in step; the code stays clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pynctest import require_tool

from pync.cli.parse import LONG, SHORT, help_text

ROOT = Path(__file__).resolve().parents[2]
MAN = (ROOT / "man" / "pync.1").read_text()


def test_every_flag_in_manual_and_help():
    help_ = help_text()
    for letter in (c for c in SHORT if c != ":"):
        assert re.search(rf"^\.It Fl {re.escape(letter)}\b", MAN, re.M), f"-{letter} not in man"
        assert re.search(rf"^\t\t-{re.escape(letter)}\b", help_, re.M), f"-{letter} not in -h"
    for name in LONG:
        name = name.rstrip("=?")
        assert f"Fl -{name}" in MAN, f"--{name} not in man"
        assert f"--{name}" in help_, f"--{name} not in -h"


def test_manual_lints_clean():
    mandoc = require_tool("mandoc")
    r = subprocess.run([mandoc, "-Tlint", "-Wwarning", str(ROOT / "man" / "pync.1")],
                       capture_output=True, text=True, timeout=30)
    problems = [line for line in r.stdout.splitlines() + r.stderr.splitlines()
                if "mandoc.db" not in line]
    assert problems == []


def test_ruff_clean():
    pytest.importorskip("ruff", reason="ruff is in the test extras")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
