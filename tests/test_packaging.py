"""The wheel carries the twistd plugin and py.typed; the package's public names resolve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import twsip

ROOT = Path(__file__).resolve().parents[1]
# What a build needs from the tree; copied so that parallel runs never share build/ dirs.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "twsip", "twisted")
# pip's words when it cannot fetch setuptools for an isolated build (no index reachable).
OFFLINE = re.compile(r"No matching distribution found for setuptools|Could not find a version "
                     r"that satisfies the requirement setuptools|NewConnectionError|"
                     r"Network is unreachable|Temporary failure in name resolution")


def _no_isolation_possible() -> bool:
    """Can this interpreter's own setuptools build a wheel (no download needed)?"""
    code = ("import setuptools, sys\n"
            "major, minor = (int(x) for x in setuptools.__version__.split('.')[:2])\n"
            "ok = (major, minor) >= (70, 1)\n"  # bdist_wheel moved into setuptools in 70.1
            "if not ok:\n"
            "    try:\n"
            "        import wheel  # noqa: F401\n"
            "        ok = (major, minor) >= (64, 0)\n"
            "    except ImportError:\n"
            "        pass\n"
            "sys.exit(0 if ok else 1)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src, out = work / "src", work / "out"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache"))
        elif path.exists():
            shutil.copy2(path, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)]
    if _no_isolation_possible():
        command.insert(4, "--no-build-isolation")
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0 and OFFLINE.search(output):
        pytest.skip("cannot build a wheel here: this Python's setuptools cannot build one "
                    "(needs setuptools >= 70.1, or wheel) and pip cannot download setuptools "
                    f"for an isolated build:\n{output[-1500:]}")
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    wheels = list(out.glob("twsip-*.whl"))
    assert len(wheels) == 1, output
    return wheels[0]


def test_wheel_carries_the_plugin_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/twsip_plugin.py" in names
    assert "twsip/py.typed" in names
    for module in (ROOT / "twsip").glob("*.py"):
        assert f"twsip/{module.name}" in names
    # twisted/ and twisted/plugins/ belong to Twisted: the wheel must not make them packages
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not any(n.endswith("dropin.cache") or n.startswith(("tests/", "bench/"))
                   for n in names), sorted(names)


def test_wheel_metadata(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    text = archive.read(metadata).decode()
    assert re.search(r"^Name: twsip$", text, re.M)
    assert re.search(r"^Requires-Python: >=3\.11$", text, re.M)
    assert re.search(r"^Requires-Dist: twisted$", text, re.M | re.I)
    for extra, dist in [("test", "pytest"), ("test", "pytest-twisted"),
                        ("test", "hypothesis"), ("bench", "sipmessage")]:
        assert re.search(rf'^Requires-Dist: {dist}; extra == "{extra}"$', text, re.M), text


def test_installed_wheel_puts_the_plugin_where_twistd_looks(wheel: Path,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    assert (target / "twisted/plugins/twsip_plugin.py").is_file()
    assert not (target / "twisted/__init__.py").exists()
    code = ("import os, sys, twisted.plugins, twsip\n"
            "from twisted.application.service import IServiceMaker\n"
            "from twisted.plugin import getPlugins\n"
            "target = sys.argv[1]\n"
            "assert twsip.__file__.startswith(target), twsip.__file__\n"
            "assert os.path.join(target, 'twisted', 'plugins') in twisted.plugins.__path__\n"
            "assert 'sipinstances' in [p.tapname for p in getPlugins(IServiceMaker)]\n")
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_py_typed_is_in_the_tree() -> None:
    assert (ROOT / "twsip" / "py.typed").is_file()
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_public_names_resolve() -> None:
    expected = {"SipInstance", "ClientSession", "ServerSession", "CallFailed", "InstanceManager",
                "ManagedInstance", "PortAllocationError", "InstanceCreationError",
                "SipParseError", "parse", "Request", "Response", "TimerSettings",
                "SipInstanceConfig", "InstanceChain", "ExecutionGraph", "ScenarioError",
                "parse_scenario", "load_scenario"}
    assert expected <= set(twsip.__all__)
    for name in twsip.__all__:
        value = getattr(twsip, name)
        assert value.__module__.startswith("twsip."), (name, value.__module__)
    assert isinstance(twsip.__version__, str)
    assert expected <= set(dir(twsip))
    from twsip import InstanceManager, SipInstance  # the usual spelling works
    from twsip.manager import InstanceManager as direct
    assert InstanceManager is direct and SipInstance.__name__ == "SipInstance"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        twsip.Nope  # noqa: B018
