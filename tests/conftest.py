"""pytest setup: the helpers module is importable as ``pynctest``; fixtures."""

from __future__ import annotations

import shutil
import tempfile

import pytest


@pytest.fixture
def sock_dir():
    """A short temp dir for UNIX socket paths (sun_path holds 108 bytes)."""
    d = tempfile.mkdtemp(prefix="pync-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
