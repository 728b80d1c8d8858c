"""Subcommands of the ``cipherfed`` command line."""
