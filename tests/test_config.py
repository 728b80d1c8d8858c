"""Federation file parsing: valid files round-trip; every bad field is named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cipherfed.config import (
    ConfigError,
    FederationConfig,
    dumps_config,
    load_config,
    loads_config,
)

VALID = """
[federation]
id = "actg-demo"
min_participants = 2
rounds = 3
round_deadline_s = 30.0
max_update_bytes = 1048576
weighting = "iterations"

[network]
coordinator = "127.0.0.1:50051"
keyholder = "127.0.0.1:50052"

[[sites]]
id = "site-01"
data = "actg175:0"

[[sites]]
id = "site-02"
data = "/data/site2.csv"

[[sites]]
id = "site-03"
data = "actg175:2"

[model]
hidden = [64, 32]

[training]
local_epochs = 2
batch_size = 16
lr = 0.05
momentum_restart = false

[privacy]
mechanism = "svt"
sharing_fraction = 0.4
gamma = 0.01
epsilon = 10.0
budget_epsilon = 500.0
delta = 1e-5

[privacy.dp_sgd]
target_epsilon = 3.0
target_delta = 1e-5

[crypto]
preset = "default"
"""


def test_valid_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(VALID)
    cfg = load_config(path)
    assert isinstance(cfg, FederationConfig)
    assert cfg.federation.id == "actg-demo"
    assert cfg.federation.min_participants == 2
    assert cfg.site_ids == ("site-01", "site-02", "site-03")
    assert cfg.site("site-01").embedded_partition == 0
    assert cfg.site("site-02").embedded_partition is None
    assert cfg.model.hidden == (64, 32)
    assert cfg.training.local_epochs == 2.0 and cfg.training.momentum_restart is False
    assert cfg.privacy.mechanism == "svt" and cfg.privacy.dp_sgd is not None
    assert cfg.privacy.dp_sgd.max_grad_norm == 1.0
    with pytest.raises(KeyError, match="site-99"):
        cfg.site("site-99")


def test_defaults_and_round_trip() -> None:
    minimal = """
[federation]
id = "f"
min_participants = 1
rounds = 1
[[sites]]
id = "a"
data = "actg175:0"
"""
    cfg = loads_config(minimal)
    assert cfg.privacy.mechanism == "none"
    assert cfg.federation.min_contributors_per_chunk is None
    assert math.isinf(cfg.privacy.budget_epsilon)
    assert loads_config(dumps_config(cfg)) == cfg
    full = loads_config(VALID)
    assert loads_config(dumps_config(full)) == full
    one = loads_config(VALID.replace("rounds = 3", "rounds = 3\nmin_contributors_per_chunk = 1"))
    assert one.federation.min_contributors_per_chunk == 1
    assert loads_config(dumps_config(one)) == one


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('id = "actg-demo"', 'id = ""', "[federation].id"),
        ('id = "actg-demo"', 'id = "bad id!"', "[federation].id"),
        ("min_participants = 2", "min_participants = 0", "[federation].min_participants"),
        ("min_participants = 2", 'min_participants = "2"', "[federation].min_participants"),
        ("min_participants = 2", "min_participants = 9", "exceeds the number of [[sites]]"),
        ("rounds = 3", "rounds = true", "[federation].rounds"),
        (
            "rounds = 3",
            "rounds = 3\nmin_contributors_per_chunk = 0",
            "[federation].min_contributors_per_chunk",
        ),
        (
            "rounds = 3",
            "rounds = 3\nmin_contributors_per_chunk = 3",
            "min_contributors_per_chunk (3) exceeds",
        ),
        ("round_deadline_s = 30.0", "round_deadline_s = -1", "[federation].round_deadline_s"),
        ('weighting = "iterations"', 'weighting = "votes"', "[federation].weighting"),
        ('coordinator = "127.0.0.1:50051"', 'coordinator = "nohost"', "[network].coordinator"),
        ('keyholder = "127.0.0.1:50052"', 'keyholder = "h:99999"', "[network].keyholder"),
        ('id = "site-02"', 'id = "site-01"', "duplicates site"),
        ('id = "site-02"', 'id = "../etc"', "[[sites]][2].id"),
        ('data = "actg175:2"', 'data = "actg175:x"', "[[sites]][3].data"),
        ("hidden = [64, 32]", "hidden = [64, -1]", "[model].hidden"),
        ("batch_size = 16", "batch_size = 0", "[training].batch_size"),
        ("lr = 0.05", "lr = 0", "[training].lr"),
        ('mechanism = "svt"', 'mechanism = "magic"', "[privacy].mechanism"),
        ("sharing_fraction = 0.4", "sharing_fraction = 1.5", "[privacy].sharing_fraction"),
        ("gamma = 0.01", "gamma = 0", "[privacy].gamma"),
        ("epsilon = 10.0", "epsilon = nan", "[privacy].epsilon"),
        ("delta = 1e-5\n", "delta = 1.0\n", "[privacy].delta"),
        ("target_epsilon = 3.0", "target_epsilon = -3.0", "[privacy].dp_sgd.target_epsilon"),
        ("lr = 0.05", "lr = 0.05\nlearning_rate = 0.1", "unknown key(s): learning_rate"),
        ("[crypto]", "[cryptography]", "unknown table(s): cryptography"),
    ],
)
def test_bad_field_is_named(old: str, new: str, field: str) -> None:
    assert old in VALID
    with pytest.raises(ConfigError) as info:
        loads_config(VALID.replace(old, new, 1), "fed.toml")
    assert field in str(info.value)
    assert str(info.value).startswith("fed.toml: ")


def test_missing_required() -> None:
    with pytest.raises(ConfigError, match=r"\[federation\] is required"):
        loads_config('[[sites]]\nid = "a"\ndata = "x"\n')
    with pytest.raises(ConfigError, match=r"\[\[sites\]\] must list at least one site"):
        loads_config('[federation]\nid = "f"\nmin_participants = 1\nrounds = 1\n')
    with pytest.raises(ConfigError, match=r"\[federation\]\.rounds is required"):
        loads_config('[federation]\nid = "f"\nmin_participants = 1\n[[sites]]\nid="a"\ndata="x"\n')


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read federation file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


@pytest.mark.parametrize(
    "argv",
    [
        ["participant", "--kit", "k", "--state", "s", "--coordinator", "nonsense"],
        ["coordinator", "--kit", "k", "--state", "s", "--keyholder", "1.2.3.4:99999"],
        ["coordinator", "--kit", "k", "--state", "s", "--address", "host:port"],
        ["keyholder", "--kit", "k", "--state", "s", "--address", ":50052"],
    ],
)
def test_address_flags_are_checked_like_the_federation_file(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped address is a usage error (exit 2, one line naming the flag), not a daemon
    that retries a connection it can never make."""
    from cipherfed import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {argv[-2]}: must be 'host:port'" in err
    assert repr(argv[-1]) in err
