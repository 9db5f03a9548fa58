pytest_plugins = [
    "tests.fix_db",
    "tests.fix_cli",
    "tests.fix_logical",
    "tests.fix_modes",
    "tests.fix_demo",
    "tests.fix_browser",
]
