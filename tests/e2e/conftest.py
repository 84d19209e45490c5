"""Every end-to-end session runs twice: on the zero-copy (splice) path and on
the portable copy path, which must behave identically."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, params=["zero-copy", "copy"])
def relay_path(request, monkeypatch):
    monkeypatch.setenv("PYNC_ZERO_COPY", "1" if request.param == "zero-copy" else "0")
    return request.param
