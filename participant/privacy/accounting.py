"""DP events and their composition into ε at a given δ.

Events are ``dp_accounting`` ``DpEvent`` objects. One event type is added here:
:class:`PureEpsilonDpEvent`, a mechanism known only to be ``(ε, 0)``-DP (the SVT selection
step). It is composed through the PLD of its *dominating pair* (binary randomized response
with parameter ε, ``PrivacyLossDistribution.from_privacy_parameters``), which is the
tightest bound valid for *every* ε-DP mechanism. ``LaplaceDpEvent`` would be tighter but
is only sound for a genuine Laplace mechanism; we use it for the SVT release step, which is
one (noise scale = L1 sensitivity / ε3, i.e. ``noise_multiplier = 1 / ε3``).

Composition: :class:`dp_accounting.pld.PLDAccountant` (add-or-remove-one relation, as
Opacus' DP-SGD) extended with :class:`PureEpsilonDpEvent`. A pure ε-DP event is valid for
any neighbouring relation, so it composes soundly with patient-level DP-SGD events.
Pure events with ε ≥ :data:`LARGE_EPSILON` (SVT at utility-preserving noise costs hundreds
per round) are added by basic composition: their PLD would need millions of bins and the
optimal composition of such events differs from the sum by a factor ``1 - O(e^-ε)``.
If the PLD computation fails, RDP (``dp_accounting.rdp.RdpAccountant``) is the fallback,
again with pure events added by basic composition.

Events serialize to a stable JSON encoding of our own (a whitelist of event types, every
field validated on load): see :func:`event_to_json` / :func:`event_from_json`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attr
import dp_accounting
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

logger = logging.getLogger(__name__)

LARGE_EPSILON = 20.0
"""Pure events at or above this ε are composed by adding their ε (see module doc)."""

_FORMAT = 1


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PureEpsilonDpEvent(dp_accounting.DpEvent):  # type: ignore[misc]
    """A mechanism that is ``(epsilon, 0)``-DP and nothing more is known about it."""

    epsilon: float


class EventEncodingError(ValueError):
    """A serialized DP event is malformed or of an unsupported type."""


# --- JSON encoding --------------------------------------------------------------------------


def _enc(event: dp_accounting.DpEvent) -> dict[str, Any]:
    if isinstance(event, PureEpsilonDpEvent):
        return {"type": "pure_epsilon", "epsilon": float(event.epsilon)}
    if isinstance(event, dp_accounting.LaplaceDpEvent):
        return {"type": "laplace", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return {"type": "gaussian", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        return {
            "type": "poisson_sampled",
            "sampling_probability": float(event.sampling_probability),
            "event": _enc(event.event),
        }
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return {"type": "self_composed", "count": int(event.count), "event": _enc(event.event)}
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return {"type": "composed", "events": [_enc(e) for e in event.events]}
    if isinstance(event, dp_accounting.NonPrivateDpEvent):
        return {"type": "non_private"}
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return {"type": "no_op"}
    raise EventEncodingError(f"unsupported DP event type {type(event).__name__}")


def event_to_json(event: dp_accounting.DpEvent) -> str:
    """Canonical JSON (sorted keys, versioned) of a supported DP event."""
    return json.dumps({"v": _FORMAT, "event": _enc(event)}, sort_keys=True, separators=(",", ":"))


def _num(obj: dict[str, Any], key: str, *, lo: float, hi: float, lo_open: bool) -> float:
    val = obj.get(key)
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise EventEncodingError(f"field {key!r} must be a number, got {val!r}")
    v = float(val)
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise EventEncodingError(f"field {key!r} out of range: {val!r}")
    return v


def _keys(obj: dict[str, Any], *keys: str) -> None:
    extra = set(obj) - {"type", *keys}
    if extra:
        raise EventEncodingError(f"unexpected fields {sorted(extra)} in {obj.get('type')!r} event")


def _dec(obj: Any, depth: int = 0) -> dp_accounting.DpEvent:
    if depth > 16:
        raise EventEncodingError("DP event nested too deeply")
    if not isinstance(obj, dict):
        raise EventEncodingError(f"DP event must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    inf = math.inf
    if kind == "pure_epsilon":
        _keys(obj, "epsilon")
        return PureEpsilonDpEvent(_num(obj, "epsilon", lo=0, hi=inf, lo_open=False))
    if kind in ("laplace", "gaussian"):
        _keys(obj, "noise_multiplier")
        nm = _num(obj, "noise_multiplier", lo=0, hi=inf, lo_open=False)
        if kind == "laplace":
            return dp_accounting.LaplaceDpEvent(nm)
        return dp_accounting.GaussianDpEvent(nm)
    if kind == "poisson_sampled":
        _keys(obj, "sampling_probability", "event")
        q = _num(obj, "sampling_probability", lo=0, hi=1, lo_open=False)
        return dp_accounting.PoissonSampledDpEvent(q, _dec(obj.get("event"), depth + 1))
    if kind == "self_composed":
        _keys(obj, "count", "event")
        count = obj.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise EventEncodingError(f"field 'count' must be a non-negative int, got {count!r}")
        return dp_accounting.SelfComposedDpEvent(_dec(obj.get("event"), depth + 1), count)
    if kind == "composed":
        _keys(obj, "events")
        events = obj.get("events")
        if not isinstance(events, list):
            raise EventEncodingError("field 'events' must be a list")
        return dp_accounting.ComposedDpEvent([_dec(e, depth + 1) for e in events])
    if kind == "non_private":
        _keys(obj)
        return dp_accounting.NonPrivateDpEvent()
    if kind == "no_op":
        _keys(obj)
        return dp_accounting.NoOpDpEvent()
    raise EventEncodingError(f"unknown DP event type {kind!r}")


def event_from_json(text: str) -> dp_accounting.DpEvent:
    """Parse and validate :func:`event_to_json` output; raise :class:`EventEncodingError`."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise EventEncodingError(f"DP event is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != _FORMAT or set(obj) != {"v", "event"}:
        raise EventEncodingError(f"DP event has an unknown envelope or version: {text[:80]!r}")
    return _dec(obj["event"])


# --- composition ----------------------------------------------------------------------------


class _PurePLDAccountant(PLDAccountant):  # type: ignore[misc]
    """PLD accountant that also composes :class:`PureEpsilonDpEvent`."""

    def _maybe_compose(self, event: dp_accounting.DpEvent, count: int, do_compose: bool) -> Any:
        if isinstance(event, PureEpsilonDpEvent):
            if do_compose and event.epsilon > 0:
                pld = pld_lib.from_privacy_parameters(
                    pld_common.DifferentialPrivacyParameters(float(event.epsilon), 0.0),
                    value_discretization_interval=self._value_discretization_interval,
                ).self_compose(count)
                self._pld = self._pld.compose(pld)  # type: ignore[has-type]
            return None
        return super()._maybe_compose(event, count, do_compose)


def _split(
    events: Iterable[dp_accounting.DpEvent], count: int, large: list[float]
) -> list[tuple[dp_accounting.DpEvent, int]]:
    """Flatten composites; move large pure-ε events (as ε * count) into ``large``."""
    rest: list[tuple[dp_accounting.DpEvent, int]] = []
    for ev in events:
        if isinstance(ev, dp_accounting.SelfComposedDpEvent):
            rest.extend(_split([ev.event], count * int(ev.count), large))
        elif isinstance(ev, dp_accounting.ComposedDpEvent):
            rest.extend(_split(ev.events, count, large))
        elif isinstance(ev, PureEpsilonDpEvent) and ev.epsilon >= LARGE_EPSILON:
            large.append(float(ev.epsilon) * count)
        elif (
            isinstance(ev, dp_accounting.LaplaceDpEvent)
            and ev.noise_multiplier > 0
            and 1.0 / ev.noise_multiplier >= LARGE_EPSILON
        ):
            large.append(count / float(ev.noise_multiplier))
        else:
            rest.append((ev, count))
    return rest


def _group(
    items: list[tuple[dp_accounting.DpEvent, int]],
) -> list[tuple[dp_accounting.DpEvent, int]]:
    """Merge repeats of one event into one (event, total count): one ``self_compose``."""
    counts: dict[str, int] = {}
    first: dict[str, dp_accounting.DpEvent] = {}
    for ev, count in items:
        key = event_to_json(ev)
        counts[key] = counts.get(key, 0) + count
        first.setdefault(key, ev)
    return [(first[k], counts[k]) for k in counts]


def _pure_epsilon(ev: dp_accounting.DpEvent) -> float | None:
    if isinstance(ev, PureEpsilonDpEvent):
        return float(ev.epsilon)
    if isinstance(ev, dp_accounting.LaplaceDpEvent) and ev.noise_multiplier > 0:
        return 1.0 / float(ev.noise_multiplier)
    return None


def compose_epsilon(events: Sequence[dp_accounting.DpEvent], delta: float) -> float:
    """ε at ``delta`` of the composition of ``events`` (``inf`` if any is non-private)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    large: list[float] = []
    rest = _split(events, 1, large)
    if any(isinstance(e, dp_accounting.NonPrivateDpEvent) for e, _ in rest):
        return math.inf
    linear = math.fsum(large)
    rest = _group(
        [(e, c) for e, c in rest if c > 0 and not isinstance(e, dp_accounting.NoOpDpEvent)]
    )
    if not rest:
        return linear
    try:
        acc = _PurePLDAccountant()
        for ev, count in rest:
            acc.compose(ev, count)
        return linear + float(acc.get_epsilon(delta))
    except Exception as exc:  # dp_accounting raises several types; fall back and say so
        logger.warning("PLD composition failed (%s); falling back to RDP", exc)
    rdp = RdpAccountant()
    for ev, count in rest:
        pure = _pure_epsilon(ev)
        if pure is not None:
            linear += pure * count
        else:
            rdp.compose(ev, count)
    return linear + float(rdp.get_epsilon(delta))


def basic_epsilon(events: Sequence[dp_accounting.DpEvent]) -> float | None:
    """Sum of ε of pure events (δ = 0); ``None`` if some event is not pure ε-DP."""
    large: list[float] = []
    rest = _split(events, 1, large)
    total = math.fsum(large)
    for ev, count in rest:
        if isinstance(ev, dp_accounting.NoOpDpEvent):
            continue
        pure = _pure_epsilon(ev)
        if pure is None:
            return None
        total += pure * count
    return total
