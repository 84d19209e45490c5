"""The build backend: setuptools', with the ``pync`` command made for the
platform the wheel is built on.

On POSIX the command is ``bin/pync`` (setup.cfg ``scripts``), a plain
script: pip's generated entry-point wrapper imports ``re`` first, which
costs more start-up time than all of ``pync -h`` (8 ms against 17 here).
Windows cannot run such a script, so a wheel built there (``os.name ==
"nt"``, or ``PYNC_COMMAND=entry-point`` to build one elsewhere) declares a
console-script entry point instead, which pip turns into ``pync.exe``; pip
then leaves out the plain script of the same name.

Everything else is setuptools' own PEP 517 hooks, unchanged.
"""

from __future__ import annotations

import os

import setuptools
from setuptools.build_meta import *  # noqa: F403 - the PEP 517 hooks
from setuptools.build_meta import __all__  # noqa: F401

ENTRY_POINT = "pync = pync.cli.run:main"


def wants_entry_point() -> bool:
    """Does this build make the command an entry point (Windows)?"""
    return os.name == "nt" or os.environ.get("PYNC_COMMAND") == "entry-point"


if wants_entry_point():
    _setup = setuptools.setup

    def _setup_with_entry_point(**attrs):
        """setuptools.setup(), as the hooks call it, with the console script."""
        attrs.setdefault("entry_points", {"console_scripts": [ENTRY_POINT]})
        return _setup(**attrs)

    setuptools.setup = _setup_with_entry_point
