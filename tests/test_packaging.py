"""The wheel a plain ``pip install .`` builds carries the SQL and the demo page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    [built] = out.glob("bookwatch-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_sql_files_ship_inside_the_package(wheel_files):
    for sql_file in (ROOT / "sql").glob("*.sql"):
        assert f"pgwatch_cli/sql/{sql_file.name}" in wheel_files


def test_demo_page_ships_inside_the_package(wheel_files):
    static = ROOT / "pgwatch_cli" / "demo" / "static"
    for asset in static.iterdir():
        assert f"pgwatch_cli/demo/static/{asset.name}" in wheel_files


def test_console_script_is_declared(wheel, wheel_files):
    [entry_points] = [name for name in wheel_files if name.endswith("entry_points.txt")]
    with zipfile.ZipFile(wheel) as archive:
        assert "bookwatch = pgwatch_cli.cli:main" in archive.read(entry_points).decode()
