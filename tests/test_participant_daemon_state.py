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


def test_state_is_bound_to_one_site(tmp_path: Path) -> None:
    st = DaemonState(tmp_path / "d.sqlite")
    st.bind("fed", "site-a")
    st.bind("fed", "site-a")
    with pytest.raises(ValueError, match="site_id 'site-a', not 'site-b'"):
        st.bind("fed", "site-b")
    st.close()


def test_a_corrupt_state_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sqlite"
    junk = b"not a database, but someone's file " * 4
    path.write_bytes(junk)
    with pytest.raises(ValueError, match=r"daemon\.sqlite: not a usable participant state"):
        DaemonState(path)
    assert path.read_bytes() == junk


def test_participant_command_refuses_bad_state_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state "folder" that is a file, or one holding a corrupt database: exit 2 with one
    line, before any training or network, and the file is untouched."""
    import argparse

    from cipherfed.commands import participant as participant_cmd
    from cipherfed.provisioning import provision
    from tests.e2e_helpers import small_config

    kits = provision(small_config(2), tmp_path / "kits")
    parser = argparse.ArgumentParser()
    participant_cmd.add_arguments(parser)
    kit = str(kits.site_kits["site-00"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = parser.parse_args(["--kit", kit, "--state", str(afile)])
    assert participant_cmd.run(args) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot use the state folder {afile}")
    assert afile.read_text() == "x"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "daemon.sqlite").write_bytes(b"garbage" * 20)
    args = parser.parse_args(["--kit", kit, "--state", str(bad)])
    assert participant_cmd.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a usable participant state" in err
    assert err.count("\n") == 1 and (bad / "daemon.sqlite").read_bytes() == b"garbage" * 20
