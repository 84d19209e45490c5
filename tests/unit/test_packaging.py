"""Packaging: the single-file pync.pyz, the shell completions, Python >= 3.9.

The pyz is built from this tree into a temp dir and used for real: a
listener and a client, both ``python pync.pyz``, move bytes over loopback.
The committed completions must be what scripts/gen-completions makes from
the parser now, and bash (and zsh, when installed) must accept them.
"""

from __future__ import annotations

import ast
import configparser
import glob
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pynctest import TIMEOUT, Proc

import pync
from pync.cli.parse import LONG, SHORT, TOS_KEYWORDS

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = ROOT / "scripts" / "completions"
PYTHON_FILES = [*sorted(ROOT.glob("pync/**/*.py")), ROOT / "bin" / "pync",
                ROOT / "scripts" / "build-pyz", ROOT / "scripts" / "gen-completions",
                ROOT / "scripts" / "build_backend.py"]


def clean_env() -> dict[str, str]:
    """The environment without PYTHON* variables that could lend pync from elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


# -- pync.pyz -----------------------------------------------------------------

@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "pync.pyz"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-pyz"), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    return out


def test_pyz_is_an_executable_compressed_zipapp_of_the_package(pyz):
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert pyz.stat().st_mode & stat.S_IXUSR
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        main = zf.read("__main__.py").decode()
    assert "from pync.cli.run import main" in main
    files = {n for n in names if not n.endswith("/")}
    assert {p.relative_to(ROOT).as_posix() for p in ROOT.glob("pync/**/*.py")} <= files
    for name in names:
        assert name == "__main__.py" or name.startswith("pync/"), name
        assert "__pycache__" not in name and not name.endswith((".pyc", ".pyo")), name
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos if not i.is_dir())


def test_pyz_help_and_self_contained(pyz, tmp_path):
    r = subprocess.run([sys.executable, str(pyz), "-h"], capture_output=True,
                       timeout=TIMEOUT, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"pync ") and b"usage: pync" in r.stdout
    # -I -S: no site-packages, so no installed pync to fall back on.
    r = subprocess.run([sys.executable, "-I", "-S", str(pyz), "--version"],
                       capture_output=True, timeout=TIMEOUT, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"pync ")


def transfer(python: str, pyz: Path, cwd: Path, size: int = 1 << 20) -> None:
    """``pyz -l -v -n 127.0.0.1 0`` receives what ``pyz -N 127.0.0.1 PORT`` sends."""
    data = os.urandom(size) + b"\nend of transfer\n"
    env = clean_env()
    listener = Proc([python, str(pyz), "-l", "-v", "-n", "127.0.0.1", "0"],
                    stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    try:
        port = int(listener.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
        client = subprocess.run([python, str(pyz), "-N", "127.0.0.1", str(port)], input=data,
                                capture_output=True, timeout=TIMEOUT, cwd=cwd, env=env)
        assert client.returncode == 0, client.stderr
        assert listener.wait() == 0, bytes(listener.err)
    finally:
        listener.kill()
    assert len(listener.out) == len(data)
    assert bytes(listener.out) == data


def test_pyz_transfer(pyz, tmp_path):
    transfer(sys.executable, pyz, tmp_path)


def python_version(path: str) -> tuple[int, ...]:
    """(3, minor) of the interpreter at path, () if it does not run (a pyenv shim)."""
    try:
        r = subprocess.run([path, "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    except OSError:
        return ()
    return tuple(int(x) for x in r.stdout.split()) if r.returncode == 0 else ()


def other_pythons() -> list[str]:
    """Other CPython 3s on this machine (PATH, pyenv), one per minor version."""
    found = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for minor in range(6, 20):
        if (3, minor) == sys.version_info[:2]:
            continue
        candidates = [shutil.which(f"python3.{minor}")]
        candidates += sorted(glob.glob(str(pyenv / "versions" / f"3.{minor}.*" / "bin"
                                           / f"python3.{minor}")))
        for path in candidates:
            if path and python_version(path) == (3, minor):
                found.append(path)
                break
    return found


@pytest.mark.parametrize("python", other_pythons() or [None])
def test_pyz_with_other_pythons(pyz, tmp_path, python):
    """Every Python >= 3.9 found here runs the pyz; an older one gets a clear refusal."""
    if python is None:
        pytest.skip("no other Python 3 on this machine")
    r = subprocess.run([python, str(pyz), "--version"], capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=tmp_path, env=clean_env())
    if python_version(python) < (3, 9):
        assert r.returncode == 1
        assert r.stderr.startswith("pync: needs Python 3.9 or newer"), r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pync ")
    transfer(python, pyz, tmp_path, size=64 * 1024)
    # and every module compiles there, also those the transfer did not import
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')"
    r = subprocess.run([python, "-c", code, *map(str, PYTHON_FILES)], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr


# -- the pync command in a wheel ----------------------------------------------

@pytest.mark.parametrize("command", ["script", "entry-point"])
def test_the_wheel_carries_the_command_for_its_platform(tmp_path, command):
    """Built on POSIX, the wheel's command is bin/pync, the plain script
    (quick to start); built for Windows (where os.name is "nt", or with
    PYNC_COMMAND=entry-point) it is a console-script entry point, which pip
    turns into pync.exe there and into its wrapper script here.  Either
    way, once installed, ``pync`` runs."""
    env = clean_env()
    if command == "entry-point":
        env["PYNC_COMMAND"] = "entry-point"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(tmp_path / "dist"), str(ROOT)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp_path / "dist").glob("pync-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = zf.read(points[0]).decode() if points else ""
    assert any(n.endswith(".data/scripts/pync") for n in names)  # for POSIX installs
    assert ("pync = pync.cli.run:main" in declared) == (command == "entry-point")
    target = tmp_path / "installed"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    script = (target / "bin" / "pync").read_text()
    if command == "script":
        assert '"""The pync command.' in script and "import re" not in script
    else:
        assert "from pync.cli.run import main" in script  # pip's own wrapper
    r = subprocess.run([str(target / "bin" / "pync"), "--version"], capture_output=True,
                       text=True, timeout=TIMEOUT, env={**clean_env(), "PYTHONPATH": str(target)})
    assert (r.returncode, r.stdout) == (0, f"pync {pync.__version__}\n"), r.stderr


# -- shell completions --------------------------------------------------------

def test_completions_match_the_parser(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-completions"),
                        "-o", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("pync.bash", "_pync"):
        assert (tmp_path / name).read_bytes() == (COMPLETIONS / name).read_bytes(), (
            f"scripts/completions/{name} is out of step with pync/cli.py:"
            " run python3 scripts/gen-completions and commit the result")


def bash_complete(words: list[str], cwd: Path) -> list[str]:
    """What the bash completion offers for the last of ``words``."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pync; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    hosts = cwd / "hosts"
    hosts.write_text("127.0.0.1 localhost pync-test-host\n")
    env = {**os.environ, "HOSTFILE": str(hosts)}
    r = subprocess.run([bash, "--norc", "--noprofile", "-c", script, "bash",
                        str(COMPLETIONS / "pync.bash"), *words],
                       capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return [line for line in r.stdout.splitlines() if line]


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    for name in ("cert.pem", "key.pem", "data.bin", "sock"):
        (tmp_path / name).write_text("")
    (tmp_path / "certs").mkdir()
    return tmp_path


PROXY_OPTIONS = {"--proxy", "--proxy-user", "--proxy-type", "--proxy-auth", "--proxy-dns"}


@pytest.mark.parametrize("words, expected", [
    (["pync", "--ssl-c"], ["--ssl-cert", "--ssl-ciphers"]),
    (["pync", "-w", "5", "--prox"], sorted(PROXY_OPTIONS)),
    (["pync", "-X", ""], ["4", "5", "connect"]),
    (["pync", "--proxy-type", ""], ["4", "5", "connect"]),
    (["pync", "--proxy-type", "=", "c"], ["connect"]),  # bash splits words at '='
    (["pync", "--proxy-t", "so", "-X", "co"], ["connect"]),
    (["pync", "-T", "low"], ["lowcost", "lowdelay"]),
    (["pync", "-lvTlow"], ["-lvTlowcost", "-lvTlowdelay"]),
    (["pync", "--tos", "c"], ["critical"] + [f"cs{i}" for i in range(8)]),
    (["pync", "--proxy-dns", ""], ["local", "remote"]),
    (["pync", "--progress", "=", ""], ["force"]),
    (["pync", "-o", "da"], ["data.bin"]),
    (["pync", "-o", "ce"], ["cert.pem", "certs"]),
    (["pync", "--ssl-cert", "ce"], ["cert.pem", "certs"]),
    (["pync", "--ssl-k", "k"], ["key.pem"]),  # an abbreviated long name
    (["pync", "--hex-dump", "=", "d"], ["data.bin"]),
    (["pync", "--allowfile", "d"], ["data.bin"]),
    (["pync", "-lU", "so"], ["sock"]),
    (["pync", "-U", "-v", "so"], ["sock"]),
    (["pync", "pync-test"], ["pync-test-host"]),
    (["pync", "-x", "pync-t"], ["pync-test-host"]),
    (["pync", "-w", "3", "pync-t"], ["pync-test-host"]),  # 3 is -w's value, not an operand
    (["pync", "host", "8"], []),
    (["pync", "-q", ""], []),
    (["pync", "--", "-X"], []),
])
def test_bash_completion(files_dir, words, expected):
    assert sorted(bash_complete(words, files_dir)) == sorted(expected)


def test_bash_completes_every_option(tmp_path):
    offered = set(bash_complete(["pync", "-"], tmp_path))
    flags = {"-" + c for c in SHORT if c != ":"} | {"--" + n.rstrip("=?") for n in LONG}
    assert offered == flags
    tos = bash_complete(["pync", "-T", ""], tmp_path)
    assert sorted(tos) == sorted(TOS_KEYWORDS)


def test_bash_registers_the_completion():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    r = subprocess.run([bash, "--norc", "--noprofile", "-c", 'source "$1"; complete -p pync',
                        "bash", str(COMPLETIONS / "pync.bash")],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "-F _pync" in r.stdout


def test_zsh_completion_loads(tmp_path):
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed")
    r = subprocess.run([zsh, "-n", str(COMPLETIONS / "_pync")],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    # compinit finds it in $fpath by its #compdef line
    script = ('fpath=("$1" $fpath); autoload -Uz compinit; compinit -u -D; '
              'print -r -- "$_comps[pync] $_comps[pync.pyz]"')
    r = subprocess.run([zsh, "-f", "-c", script, "zsh", str(COMPLETIONS)],
                       capture_output=True, text=True, timeout=TIMEOUT,
                       env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["_pync", "_pync"]


# -- Python >= 3.9 ------------------------------------------------------------

def test_setup_cfg_states_python_3_9():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == ">=3.9"
    classifiers = cfg["metadata"]["classifiers"].split("\n")
    assert "Programming Language :: Python :: 3.9" in classifiers


@pytest.mark.parametrize("path", PYTHON_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_as_python_3_9(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


VERMIN = "import sys; from vermin.main import main; sys.exit(main())"


def vermin(*args: str) -> subprocess.CompletedProcess:
    try:
        import vermin  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("vermin is in the test extras but not installed")
        pytest.skip("vermin not installed (pip install '.[test]')")
    # --no-config-file: vermin would otherwise read setup.cfg
    return subprocess.run([sys.executable, "-c", VERMIN, "--no-config-file", "--no-tips",
                           "--target=3.9-", "--violations", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_vermin_finds_nothing_newer_than_3_9():
    r = vermin(*(str(p.relative_to(ROOT)) for p in PYTHON_FILES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_vermin_would_catch_python_3_10(tmp_path):
    (tmp_path / "new.py").write_text("import itertools\nprint(list(itertools.pairwise('ab')))\n")
    r = vermin(str(tmp_path / "new.py"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "itertools.pairwise" in r.stdout
