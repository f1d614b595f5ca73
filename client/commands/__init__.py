"""Subcommands of the `trainyard` command line (see client/cli.py)."""
