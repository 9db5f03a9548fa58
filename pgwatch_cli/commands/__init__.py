"""One module or folder per command, each with one entry function and no Typer; cli.py calls them.

Nothing outside ``commands`` imports from here.
"""
