"""What users install: the wheel and the sdist, and that the suite runs on that wheel.

bash .ci/run builds both with .ci/wheel.sh, installs the wheel, and points
ENTROPIC_TEST_WHEEL and ENTROPIC_TEST_SDIST at them. Elsewhere the sdist is built here
(seconds); the wheel is not (a release build takes minutes): run `make wheel` and set
ENTROPIC_TEST_WHEEL=dist/entropic-...whl, or those tests skip. Under CI they fail instead.
"""

from __future__ import annotations

import email.message
import email.parser
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import NoReturn

import pytest

import entropic

ROOT = Path(__file__).resolve().parent.parent
LICENSE = (ROOT / "LICENSE").read_text()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str, how: str) -> NoReturn:
    """Skip a test that has nothing to check, except in CI, where that is a failure."""
    if IN_CI:
        pytest.fail(f"CI must check {what}: {how}")
    pytest.skip(f"no {what} to check: {how}")


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The wheel .ci/run built and installed."""
    given = os.environ.get("ENTROPIC_TEST_WHEEL")
    if not given:
        _missing("wheel", "run `make wheel`, then set ENTROPIC_TEST_WHEEL=dist/entropic-*.whl")
    path = Path(given)
    assert path.is_file(), f"ENTROPIC_TEST_WHEEL={given} is not a file"
    return path


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist .ci/run built, or one built here from this checkout."""
    given = os.environ.get("ENTROPIC_TEST_SDIST")
    if given:
        path = Path(given)
        assert path.is_file(), f"ENTROPIC_TEST_SDIST={given} is not a file"
        return path
    if importlib.util.find_spec("maturin") is None:
        _missing("sdist", "pip install maturin, or set ENTROPIC_TEST_SDIST=dist/entropic-*.tar.gz")
    out = tmp_path_factory.mktemp("sdist")
    built = subprocess.run(
        [sys.executable, "-m", "maturin", "sdist", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr.lower(), built.stderr
    (path,) = out.glob("entropic-*.tar.gz")
    return path


def _wheel_tags(wheel: Path) -> tuple[str, str, list[str]]:
    """The python, abi and platform tags a wheel's file name declares."""
    python, abi, platforms = wheel.name.removesuffix(".whl").split("-")[-3:]
    return python, abi, platforms.split(".")


def _dist_info(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.dist-info"


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        return email.parser.Parser().parsestr(zf.read(f"{_dist_info(wheel)}/METADATA").decode())


def _sdist_metadata(sdist: Path) -> email.message.Message:
    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as tf:
        member = tf.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        return email.parser.Parser().parsestr(member.read().decode())


def test_wheel_is_abi3_and_manylinux_2_17(wheel: Path) -> None:
    """One wheel for CPython >= 3.10 that installs on glibc 2.17 (RHEL/CentOS 7) and later."""
    arch = platform.machine()
    python, abi, platforms = _wheel_tags(wheel)
    assert (python, abi) == ("cp310", "abi3")
    assert f"manylinux_2_17_{arch}" in platforms, platforms
    assert f"manylinux2014_{arch}" in platforms, platforms
    with zipfile.ZipFile(wheel) as zf:
        info = email.parser.Parser().parsestr(zf.read(f"{_dist_info(wheel)}/WHEEL").decode())
    assert info["Root-Is-Purelib"] == "false"
    assert sorted(info.get_all("Tag", [])) == sorted(f"{python}-{abi}-{p}" for p in platforms)


def test_wheel_symbols_allow_manylinux_2_17(wheel: Path) -> None:
    """The tag is not only a name: auditwheel reads the glibc symbols the extension needs."""
    if importlib.util.find_spec("auditwheel") is None:
        _missing("auditwheel verdict", "pip install auditwheel (.ci/wheel.sh does)")
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["overall_tag"] == f"manylinux_2_17_{platform.machine()}", report
    assert report["external_libs"] == {}, report


def test_wheel_ships_licence_stub_and_typed_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read(f"{_dist_info(wheel)}/licenses/LICENSE").decode() == LICENSE
    for name in ("py.typed", "_core.pyi", "_core.abi3.so", "__init__.py"):
        assert f"entropic/{name}" in names, name
    assert not [name for name in names if name.startswith(("tests/", "python/", "rust/"))]


def test_sdist_ships_licence_and_everything_to_build(sdist: Path) -> None:
    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
        member = tf.extractfile(f"{top}/LICENSE")
        assert member is not None
        assert member.read().decode() == LICENSE
    for name in (
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "rust/src/lib.rs",
        "python/entropic/__init__.py",
        "python/entropic/py.typed",
        "python/entropic/_core.pyi",
    ):
        assert f"{top}/{name}" in names, name
    assert not [name for name in names if name.endswith((".so", ".pyd"))]


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_metadata(kind: str, request: pytest.FixtureRequest) -> None:
    """PEP 639 licence fields, the classifiers and URLs an index page shows, the extras."""
    path: Path = request.getfixturevalue(kind)
    meta = _wheel_metadata(path) if kind == "wheel" else _sdist_metadata(path)
    version = tuple(int(part) for part in meta["Metadata-Version"].split("."))
    assert version >= (2, 4), meta["Metadata-Version"]
    assert meta["Name"] == "entropic"
    assert path.name.startswith(f"entropic-{meta['Version']}")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None  # superseded by License-Expression
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Summary"].startswith("A run cache for parameterised simulations")
    assert "simulation" in meta["Keywords"].split(",")
    classifiers = meta.get_all("Classifier", [])
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Rust" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639 forbids both
    urls = dict(line.split(", ", 1) for line in meta.get_all("Project-URL", []))
    assert set(urls) >= {"Homepage", "Documentation", "Repository", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    assert set(meta.get_all("Provides-Extra", [])) >= {"test", "lint", "examples", "postgres"}
    assert "sqlalchemy>=2.1" in meta.get_all("Requires-Dist", [])
    assert meta["Description-Content-Type"].startswith("text/markdown")


def test_wheel_and_sdist_agree(wheel: Path, sdist: Path) -> None:
    """Built from the same checkout, they describe the same project."""
    fields = ("Name", "Version", "Requires-Dist", "Provides-Extra", "Classifier", "Project-URL")
    from_wheel, from_sdist = _wheel_metadata(wheel), _sdist_metadata(sdist)
    for field in fields:
        assert from_wheel.get_all(field) == from_sdist.get_all(field), field


def _record_digest(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_suite_runs_on_the_installed_wheel(wheel: Path) -> None:
    """entropic comes from site-packages, byte for byte the wheel: not python/ in this tree."""
    where = Path(entropic.__file__).resolve().parent
    site = Path(sysconfig.get_path("platlib")).resolve()
    assert where == site / "entropic", f"entropic imported from {where}, not {site}"
    source = ROOT / "python"
    assert not [p for p in sys.path if p and Path(p).resolve() == source], sys.path
    dist = importlib.metadata.distribution("entropic")
    direct_url = dist.read_text("direct_url.json")
    assert direct_url is None or not json.loads(direct_url).get("dir_info", {}).get("editable")
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read(f"{_dist_info(wheel)}/RECORD").decode().splitlines()
        assert dist.version == _wheel_metadata(wheel)["Version"]
        package = [line.split(",") for line in record if line.startswith("entropic/")]
        assert package
        for name, digest, _size in package:
            installed = (site / name).read_bytes()
            assert _record_digest(installed) == digest, f"{name} differs from the wheel's"
