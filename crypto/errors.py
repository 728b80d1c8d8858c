"""The one error type for bad untrusted input."""

from __future__ import annotations


class InvalidUpdate(Exception):
    """Untrusted bytes failed verification: garbage, truncated, wrong version or parameters,
    another context, a bad signature. The message says what was wrong; nothing more is known.
    """
