pytest_plugins = [
    "tests.fix_logical",  # before fix_db, which starts its clusters
    "tests.fix_db",
    "tests.fix_cli",
    "tests.fix_modes",
    "tests.fix_demo",
    "tests.fix_browser",
    "tests.fix_roles",
]
