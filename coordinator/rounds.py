"""The round state machine, pure: no I/O, time comes from the caller.

A round ``t`` opens with the global model ``W(t-1)`` (named by its digest), a deadline and the
minimum number of participants ``K``. Updates are accepted while it is open, at most one per
site. It closes as soon as every site of the federation has sent an update (and at least
``K`` did), or at the deadline when at least ``K`` did; with fewer than ``K`` at the deadline it is
retried: a new attempt with a fresh deadline that keeps the updates already accepted.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from coordinator.errors import DuplicateSubmission, WrongRound


class Phase(enum.Enum):
    OPEN = "open"
    AGGREGATING = "aggregating"
    DONE = "done"


class Action(enum.Enum):
    WAIT = "wait"
    CLOSE = "close"
    RETRY = "retry"


@dataclass(frozen=True)
class RoundPolicy:
    min_participants: int
    deadline_s: float
    rounds: int

    def __post_init__(self) -> None:
        if self.min_participants < 1:
            raise ValueError(f"min_participants must be >= 1, got {self.min_participants}")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class Accepted:
    """Metadata of one accepted update (the ciphertexts live in the blob store)."""

    site_id: str
    round: int
    weight: int
    chunk_ids: tuple[int, ...]
    envelope_digest: str
    received_at: float


def _empty() -> Mapping[str, Accepted]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RoundState:
    round: int
    attempt: int
    phase: Phase
    opened_at: float
    deadline: float
    model_digest: str
    accepted: Mapping[str, Accepted] = field(default_factory=_empty)

    @property
    def n_accepted(self) -> int:
        return len(self.accepted)


def open_round(round_no: int, model_digest: str, now: float, policy: RoundPolicy) -> RoundState:
    if not 1 <= round_no <= policy.rounds:
        raise ValueError(f"round {round_no} outside 1..{policy.rounds}")
    return RoundState(
        round=round_no,
        attempt=1,
        phase=Phase.OPEN,
        opened_at=now,
        deadline=now + policy.deadline_s,
        model_digest=model_digest,
    )


def check_can_accept(state: RoundState, site_id: str, round_no: int) -> None:
    """Raise the domain error that says why an update for ``round_no`` cannot be taken."""
    if round_no != state.round:
        raise WrongRound(f"round {round_no} is not open; the open round is {state.round}")
    if state.phase is not Phase.OPEN:
        raise WrongRound(f"round {state.round} no longer accepts updates ({state.phase.value})")
    if site_id in state.accepted:
        raise DuplicateSubmission(f"site {site_id!r} already submitted for round {round_no}")


def accept(state: RoundState, update: Accepted) -> RoundState:
    check_can_accept(state, update.site_id, update.round)
    accepted = dict(state.accepted)
    accepted[update.site_id] = update
    return replace(state, accepted=MappingProxyType(accepted))


def decide(state: RoundState, now: float, enrolled: Collection[str], policy: RoundPolicy) -> Action:
    """What to do with an open round now."""
    if state.phase is not Phase.OPEN:
        return Action.WAIT
    n = state.n_accepted
    everyone = bool(enrolled) and set(enrolled) <= set(state.accepted)
    if n >= policy.min_participants and everyone:
        return Action.CLOSE
    if now >= state.deadline:
        return Action.CLOSE if n >= policy.min_participants else Action.RETRY
    return Action.WAIT


def retry(state: RoundState, now: float, policy: RoundPolicy) -> RoundState:
    """A new attempt of the same round with a fresh deadline; accepted updates are kept."""
    return replace(state, attempt=state.attempt + 1, deadline=now + policy.deadline_s)


def start_aggregation(state: RoundState) -> RoundState:
    if state.phase is not Phase.OPEN:
        raise WrongRound(f"round {state.round} is {state.phase.value}, cannot aggregate")
    return replace(state, phase=Phase.AGGREGATING)


def finish(state: RoundState) -> RoundState:
    return replace(state, phase=Phase.DONE)
