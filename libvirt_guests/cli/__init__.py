"""The command line: the entry point, argument parsing, help, the man page, completion.

The console script is libvirt_guests.cli:run (pyproject.toml, packaging/rpm)."""

from libvirt_guests.cli.main import run

__all__ = ["run"]
