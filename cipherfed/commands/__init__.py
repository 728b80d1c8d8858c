"""Subcommands of the ``cipherfed`` command line, and what their parsers share."""

from __future__ import annotations

import argparse

from cipherfed.config import check_address


def address(value: str) -> str:
    """An argparse ``type`` for a ``host:port`` flag: checked as the federation file's
    addresses are, so that a typo is a usage error, not a daemon retrying forever."""
    try:
        return check_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
