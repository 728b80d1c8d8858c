"""The pure round state machine, the blob store and the coordinator's SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import rounds as rs
from coordinator.blobs import BlobCorrupted, BlobStore
from coordinator.errors import DuplicateSubmission, WrongRound
from coordinator.store import CoordinatorStore, StoredSubmission

POLICY = rs.RoundPolicy(min_participants=2, deadline_s=10.0, rounds=3)


def _acc(site: str, round_no: int = 1, now: float = 1.0) -> rs.Accepted:
    return rs.Accepted(site, round_no, 5, (0,), "e" * 64, now)


def test_round_closes_when_every_site_sent() -> None:
    s = rs.open_round(1, "m" * 64, 100.0, POLICY)
    assert s.deadline == 110.0
    s = rs.accept(s, _acc("a"))
    assert rs.decide(s, 101.0, {"a", "b"}, POLICY) is rs.Action.WAIT
    s = rs.accept(s, _acc("b"))
    assert rs.decide(s, 101.0, {"a", "b"}, POLICY) is rs.Action.CLOSE


def test_round_closes_at_deadline_with_k_and_retries_below_k() -> None:
    s = rs.open_round(1, "m" * 64, 0.0, POLICY)
    s = rs.accept(s, _acc("a"))
    enrolled = {"a", "b", "c"}
    assert rs.decide(s, 9.9, enrolled, POLICY) is rs.Action.WAIT
    assert rs.decide(s, 10.0, enrolled, POLICY) is rs.Action.RETRY
    s2 = rs.retry(s, 10.0, POLICY)
    assert (s2.attempt, s2.deadline, set(s2.accepted)) == (2, 20.0, {"a"})
    s2 = rs.accept(s2, _acc("b"))
    assert rs.decide(s2, 15.0, enrolled, POLICY) is rs.Action.WAIT
    assert rs.decide(s2, 20.0, enrolled, POLICY) is rs.Action.CLOSE


def test_everyone_but_fewer_than_k_waits_for_deadline() -> None:
    s = rs.accept(rs.open_round(1, "m" * 64, 0.0, POLICY), _acc("a"))
    assert rs.decide(s, 1.0, {"a"}, POLICY) is rs.Action.WAIT
    assert rs.decide(s, 10.0, {"a"}, POLICY) is rs.Action.RETRY


def test_accept_refuses_duplicate_wrong_round_and_closed_round() -> None:
    s = rs.accept(rs.open_round(2, "m" * 64, 0.0, POLICY), _acc("a", 2))
    with pytest.raises(DuplicateSubmission, match="already submitted"):
        rs.accept(s, _acc("a", 2))
    with pytest.raises(WrongRound, match="round 1 is not open"):
        rs.accept(s, _acc("b", 1))
    agg = rs.start_aggregation(s)
    with pytest.raises(WrongRound, match="no longer accepts"):
        rs.accept(agg, _acc("b", 2))
    assert rs.decide(agg, 99.0, {"a", "b"}, POLICY) is rs.Action.WAIT


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="min_participants"):
        rs.RoundPolicy(0, 1.0, 1)
    with pytest.raises(ValueError, match="deadline_s"):
        rs.RoundPolicy(1, 0.0, 1)
    with pytest.raises(ValueError, match="round 4 outside"):
        rs.open_round(4, "m", 0.0, POLICY)


def test_blob_store_is_content_addressed_atomic_and_detects_corruption(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    d = store.put(b"hello")
    assert store.put(b"hello") == d and store.get(d) == b"hello" and d in store
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))
    with pytest.raises(KeyError):
        store.get("0" * 64)
    with pytest.raises(ValueError, match="not a hex SHA-256"):
        store.get("../etc/passwd")
    (tmp_path / "blobs" / d[:2] / d).write_bytes(b"tampered")
    with pytest.raises(BlobCorrupted, match=d):
        store.get(d)


def _sub(site: str, round_no: int) -> StoredSubmission:
    return StoredSubmission(
        site_id=site,
        round=round_no,
        envelope=b"{}",
        signature=b"sig",
        envelope_digest="e" * 64,
        weight=7,
        chunk_blobs={0: "a" * 64, 2: "b" * 64},
        n_bytes=123,
        received_at=5.0,
        receipt_signature=b"r",
        timings={"train_s": 1.5},
    )


def test_store_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    st = CoordinatorStore(path)
    state = rs.open_round(1, "m" * 64, 0.0, POLICY)
    st.save_round(state)
    st.add_submission(_sub("a", 1))
    with pytest.raises(Exception, match="UNIQUE"):
        st.add_submission(_sub("a", 1))
    st.enrol("a", 1.0)
    st.enrol("a", 2.0)
    st.save_checkpoint(0, "m" * 64, 0.0)
    st.save_keyholder_result(1, "s" * 64, {0: 0.5}, 3.0)
    st.close()

    st = CoordinatorStore(path)
    [sub] = st.submissions(1)
    assert st.load_latest_round() == rs.accept(state, sub.accepted())
    assert sub == _sub("a", 1)
    assert sub.accepted().chunk_ids == (0, 2)
    assert st.enrolled() == {"a"}
    assert st.checkpoint(0) == "m" * 64 and st.checkpoint(1) is None
    assert st.keyholder_result(1) == ("s" * 64, {0: 0.5})
    st.complete_round(1, "n" * 64, 9.0, 1, "applied", {"aggregation_s": 0.1})
    assert st.checkpoint(1) == "n" * 64
    [row] = st.round_stats()
    assert row["participants"] == 1 and row["stats"] == {"aggregation_s": 0.1}
    assert st._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.close()
