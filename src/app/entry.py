"""The `saas` console script's entry point: it imports the CLI when it runs, not before.

uvicorn starts `saas serve`'s workers with multiprocessing's spawn, which re-imports the parent's
main script, this console script, in every worker. Were the script to import `app.cli` at its
top, each API worker would carry the CLI (typer, shellingham, the commands) for nothing.
"""

from __future__ import annotations


def main() -> None:
    from app.cli import main as cli_main

    cli_main()
