"""Domain errors of the coordinator; the gRPC servicer maps each to one status code."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class: a request the coordinator refuses, with a message naming what was wrong."""


class InvalidSubmission(CoordinatorError):
    """Malformed input: garbage bytes, bad signature, wrong fingerprint, digest mismatch."""


class WrongRound(CoordinatorError):
    """The request names a round that is not open (replay of an earlier round, early bird)."""


class DuplicateSubmission(CoordinatorError):
    """The site already has an accepted update for this round."""


class NotPermitted(CoordinatorError):
    """The caller is not an enrolled site, or claims to be another site."""


class TooLarge(CoordinatorError):
    """The upload exceeds the configured maximum size."""
