"""The daemon's durable per-round state: never a second, different update for a round."""

from __future__ import annotations

from pathlib import Path

import pytest

from participant.state import DaemonState, PreparedUpdate, RoundStatus


def test_prepared_survives_restart_and_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sqlite"
    st = DaemonState(path)
    up = PreparedUpdate(3, b"env", b"sig", {0: b"c0", 4: b"c4"}, {"train_s": 1.0})
    st.save_prepared(up)
    with pytest.raises(ValueError, match="round 3 already has"):
        st.save_prepared(PreparedUpdate(3, b"other", b"s", {0: b"x"}, {}))
    st.close()

    st = DaemonState(path)
    rec = st.record(3)
    assert rec is not None and rec.status is RoundStatus.PREPARED and rec.n_bytes == 4
    assert st.prepared(3) == up
    st.mark_submitted(3, b"receipt", {"upload_s": 0.5})
    assert st.prepared(3) is None
    rec = st.record(3)
    assert rec is not None and rec.status is RoundStatus.SUBMITTED
    assert rec.receipt == b"receipt" and rec.timings == {"train_s": 1.0, "upload_s": 0.5}
    st.mark_skipped(4, "budget exhausted")
    assert [r.status for r in st.records()] == [RoundStatus.SUBMITTED, RoundStatus.SKIPPED]
    assert st.record(5) is None
    st.close()
