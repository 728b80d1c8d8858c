"""Privacy step of a site: clipping, corrected SVT, partial sharing, DP-SGD, the ledger.

See docs/privacy.md for the mechanisms, their neighbouring relations and their costs.
``dpsgd`` (Opacus, torch) is not imported here; import ``participant.privacy.dpsgd``
where DP-SGD is used.
"""

from participant.privacy.accounting import (
    EventEncodingError,
    PureEpsilonDpEvent,
    compose_epsilon,
    event_from_json,
    event_to_json,
)
from participant.privacy.clipping import clip_l2, clip_update, clip_values, normalized_clipped
from participant.privacy.config import ClipConfig, DPSGDConfig, PartialShareConfig, SVTConfig
from participant.privacy.ledger import BudgetExceeded, LedgerError, PrivacyLedger
from participant.privacy.partial import partial_share
from participant.privacy.result import PrivacyResult
from participant.privacy.step import planned_events, run_privacy_step
from participant.privacy.svt import SVTBudget, svt_budget, svt_events, svt_select

__all__ = [
    "BudgetExceeded",
    "ClipConfig",
    "DPSGDConfig",
    "EventEncodingError",
    "LedgerError",
    "PartialShareConfig",
    "PrivacyLedger",
    "PrivacyResult",
    "PureEpsilonDpEvent",
    "SVTBudget",
    "SVTConfig",
    "clip_l2",
    "clip_update",
    "clip_values",
    "compose_epsilon",
    "event_from_json",
    "event_to_json",
    "normalized_clipped",
    "partial_share",
    "planned_events",
    "run_privacy_step",
    "svt_budget",
    "svt_events",
    "svt_select",
]
