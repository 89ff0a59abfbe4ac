"""The package as pipx installs it: a wheel with both console scripts and the web client.

The wheel is built offline from a copy of the source (``--no-build-isolation``:
the test extras bring setuptools, so no index is asked and the work tree
gets no ``build/``), installed with ``pip --target``, and then run for real:
its ``swfed`` and ``scaiwave`` scripts, and a server importing only the
installed copy that serves the bundled web client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swfed import __version__
from tests.harness import ServerProcess, running

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "swfed", src / "swfed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(wheels)],
                   cwd=src, env=env, check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("swfed-*.whl")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], env=env, check=True, capture_output=True,
                   timeout=300)
    yield wheel, target


def test_wheel_holds_the_web_client_and_both_scripts(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    assert wheel.name.startswith(f"swfed-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    web = {f"swfed/web/{p.relative_to(REPO / 'swfed' / 'web')}"
           for p in (REPO / "swfed" / "web").rglob("*") if p.is_file()}
    assert "swfed/web/index.html" in web and web <= names, web - names
    assert "swfed/cli.py" in names and "swfed/core/__init__.py" in names
    assert "swfed = swfed.cli:main" in entry_points
    assert "scaiwave = swfed.cli:main" in entry_points


def test_installed_scripts_print_the_version(installed: tuple[Path, Path]) -> None:
    _, target = installed
    env = {**os.environ, "PYTHONPATH": str(target)}
    for script in ("swfed", "scaiwave"):
        out = subprocess.run([str(target / "bin" / script), "--version"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f"swfed {__version__}", out


async def test_installed_copy_serves_the_web_client(installed: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    _, target = installed
    # PYTHONSAFEPATH: not the work tree's swfed from the current directory
    env = {"PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    server = ServerProcess(tmp_path / "a", "a.test", env=env)
    with running(server):
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/")
            assert r.status_code == 200 and "<html" in r.text.lower()
    where = subprocess.run([sys.executable, "-c", "import swfed; print(swfed.__file__)"],
                           env={**os.environ, **env},
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target))
