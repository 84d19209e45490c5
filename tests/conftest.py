"""pytest setup: the helpers module is importable as ``pynctest``; fixtures.

The suites that mark themselves ``pytestmark = pytest.mark.usefixtures(
"pync_backend")`` run every test twice: with pync on this platform's own
backend (Linux: poll, splice, fork) and with the Linux-only APIs hidden
(tests/portable/sitecustomize.py), so that pync takes the portable backend
it uses on macOS and Windows.  A test of something the portable platform
lacks (UNIX sockets, splice) is marked ``native_only``: its portable run is
deselected, and a test of the refusal stands for it.
"""

from __future__ import annotations

import select
import shutil
import tempfile

import pytest
from pynctest import hide_linux_apis


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "native_only: needs an API the portable backend's platforms lack")


@pytest.fixture(params=["native", "portable"])
def pync_backend(request, monkeypatch):
    """Run the pync processes of this test on one backend or the other."""
    if request.param == "portable":
        hide_linux_apis(monkeypatch)
    return request.param


@pytest.fixture(params=["zero-copy", "copy", "portable"])
def relay_path(request, monkeypatch):
    """The relay's three paths, which must all behave alike: zero-copy
    (splice, sendfile), copying through memory, and the portable backend."""
    monkeypatch.setenv("PYNC_ZERO_COPY", "1" if request.param == "zero-copy" else "0")
    if request.param == "portable":
        hide_linux_apis(monkeypatch)
    return request.param


def pytest_collection_modifyitems(config, items):
    """Portable runs of tests marked native_only are not collected, nor any
    portable run where the native backend is the portable one already
    (macOS, Windows: hiding Linux's APIs changes nothing there)."""
    native_is_portable = not hasattr(select, "epoll")
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        portable = "portable" in (params.get("pync_backend"), params.get("relay_path"))
        unwanted = portable and (native_is_portable or item.get_closest_marker("native_only"))
        (drop if unwanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def sock_dir():
    """A short temp dir for UNIX socket paths (sun_path holds 108 bytes)."""
    d = tempfile.mkdtemp(prefix="pync-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
