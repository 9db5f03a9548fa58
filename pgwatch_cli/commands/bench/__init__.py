"""``bookwatch bench``: notify latency and write overhead under load, in separate processes.

options.py (what to run) → runner.py (coordinator) → writer.py / listeners.py (children,
started with "spawn") → report.py (figures, table, JSON). scratch.py owns the scratch schema.
"""

from pgwatch_cli.commands.bench.options import BenchOptions, checked
from pgwatch_cli.commands.bench.report import BenchReport, render
from pgwatch_cli.commands.bench.runner import run

__all__ = ["BenchOptions", "BenchReport", "checked", "render", "run"]
