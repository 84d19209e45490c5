"""The package's shape: layers, no import cycles, platform calls in one place,
and a type check for Windows, macOS and Linux.

* import-linter runs the contracts in setup.cfg: the command line over the
  modes over the sockets, the relay, the protocols, the platform and the
  vocabulary; the protocols sans-I/O; the relay without modes or Options;
  platform-specific modules (fcntl, select, signal, termios, msvcrt, ...)
  imported only by pync.platform.
* No two modules of pync import each other, even through others.
* The calls that exist on some platforms only (os.fork, os.splice,
  socket.AF_UNIX, ...) appear only in pync/platform.
* ``mypy --platform win32|darwin|linux`` finds nothing: in particular no
  call to what a platform's os, select, socket, signal, fcntl or termios
  lacks (code that only runs where it exists is guarded for the checker).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pync"

# Names that some platform's os or socket module lacks.
PLATFORM_ONLY = {
    "os": {"fork", "forkpty", "splice", "sendfile", "readv", "writev", "pipe2",
           "set_blocking", "get_blocking", "makedev", "major", "minor", "mkfifo",
           "O_CLOEXEC", "O_NONBLOCK", "O_NOCTTY", "O_BINARY", "WNOHANG", "WIFEXITED",
           "WEXITSTATUS", "waitpid", "kill", "killpg", "setsid", "getuid", "geteuid",
           "SPLICE_F_MOVE", "SPLICE_F_NONBLOCK", "sched_getaffinity"},
    "socket": {"AF_UNIX", "send_fds", "recv_fds", "sendmsg", "recvmsg", "SCM_RIGHTS",
               "SOCK_NONBLOCK", "SOCK_CLOEXEC", "SO_RCVLOWAT", "TCP_CONGESTION",
               "IP_MINTTL", "IPV6_MINHOPCOUNT", "SO_REUSEPORT", "fromshare",
               "TCP_MD5SIG"},
}


def _needs(module: str, hint: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is in the test extras but not installed")
        pytest.skip(f"{module} not installed ({hint})")


def test_import_contracts_are_kept():
    _needs("importlinter", "pip install '.[test]'")
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from importlinter.cli import lint_imports_command;"
                        " sys.exit(lint_imports_command())"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout, r.stdout


def test_no_import_cycles_between_modules():
    _needs("grimp", "import-linter's graph library")
    import grimp

    graph = grimp.build_graph("pync", cache_dir=None)
    modules = sorted(m for m in graph.modules if m.startswith("pync"))
    edges = {m: [n for n in graph.find_modules_directly_imported_by(m)
                 if n.startswith("pync") and n != "pync"] for m in modules}
    cycles = [c for c in _strongly_connected(modules, edges) if len(c) > 1]
    assert cycles == [], f"modules importing each other: {cycles}"


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = edges.get(node, [])
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _strongly_connected(["a", "b", "c"], {"a": ["b"], "b": ["a"], "c": ["a"]}) \
        == [["a", "b"], ["c"]]


def _platform_only_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.attr in PLATFORM_ONLY.get(node.value.id, ())):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name)
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in PLATFORM_ONLY.get(node.args[0].id, ())):
            found.append(f"{node.func.id}({node.args[0].id}, {node.args[1].value!r}) "
                         f"(line {node.lineno})")
    return found


def test_platform_specific_calls_only_in_the_platform_layer():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "platform") in path.parents:
            continue
        uses = _platform_only_uses(ast.parse(path.read_text(), str(path)))
        if uses:
            offenders[str(path.relative_to(ROOT))] = uses
    assert offenders == {}


def test_the_scan_for_platform_calls_would_see_one():
    tree = ast.parse("import os, socket\nos.fork()\ngetattr(socket, 'AF_UNIX', None)\n")
    assert sorted(_platform_only_uses(tree)) == ["getattr(socket, 'AF_UNIX') (line 3)",
                                                 "os.fork (line 2)"]


@pytest.mark.parametrize("platform", ["win32", "darwin", "linux"])
def test_mypy_finds_nothing_for_each_platform(platform, tmp_path):
    _needs("mypy", "pip install '.[test]' (Python >= 3.10)")
    r = subprocess.run([sys.executable, "-m", "mypy", "--platform", platform,
                        "--cache-dir", str(tmp_path), "--no-error-summary",
                        "--hide-error-context", str(PACKAGE)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout == "" and r.returncode == 0, r.stdout + r.stderr
