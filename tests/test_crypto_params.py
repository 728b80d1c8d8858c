"""Parameter presets: SEAL accepts them at 128-bit security, fingerprints, headroom."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crypto import DEFAULT_PRESET, PRESETS, CkksParams
from crypto._seal import SealContext

VECTORS = Path(__file__).parent / "vectors" / "crypto"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_accepted_by_seal_with_one_60_bit_data_prime(name: str) -> None:
    params = PRESETS[name]
    limit = {4096: 109, 8192: 218}[params.poly_modulus_degree]
    assert sum(params.coeff_mod_bit_sizes) <= limit
    ctx = SealContext(params)  # raises if SEAL refuses them at tc128
    assert 2**59 < ctx.q < 2**60
    assert params.values_per_ciphertext == params.poly_modulus_degree == 2 * params.slot_count


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_headroom_bound_keeps_the_sum_below_half_the_data_prime(name: str) -> None:
    params = PRESETS[name]
    q = SealContext(params).q
    worst = math.sqrt(2) * params.value_bound * params.max_weight_sum * params.scale
    assert worst < q / 2
    # and the bound is not wildly conservative: doubling the weight sum would overflow
    assert math.sqrt(2) * params.value_bound * 2 * params.max_weight_sum * params.scale > q / 2


def test_fingerprints_are_known_answers_and_distinct() -> None:
    expected = json.loads((VECTORS / "params_fingerprints.json").read_text())
    assert {n: p.fingerprint for n, p in PRESETS.items()} == expected
    assert len(set(expected.values())) == len(expected)
    assert DEFAULT_PRESET in PRESETS


def test_canonical_json_round_trip() -> None:
    for params in PRESETS.values():
        back = CkksParams.from_canonical_json(params.canonical_json())
        assert back == params and back.fingerprint == params.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": (60, 60)}, "security limit"),
        ({"coeff_mod_bit_sizes": (60, 30, 19)}, "one data level"),
        ({"coeff_mod_bit_sizes": (50, 49)}, "60 bits"),
        ({"scale_bits": 60}, "scale_bits"),
        ({"value_bound": float("nan")}, "value_bound"),
        ({"value_bound": 0.0}, "value_bound"),
        ({"scale_bits": 55, "value_bound": 64.0}, "headroom"),
    ],
)
def test_invalid_parameters_are_refused_with_the_field_named(
    kwargs: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {
        "name": "x",
        "poly_modulus_degree": 4096,
        "coeff_mod_bit_sizes": (60, 49),
        "scale_bits": 46,
        "value_bound": 4.0,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CkksParams(**base)  # type: ignore[arg-type]


def test_from_canonical_json_rejects_garbage_and_other_versions() -> None:
    with pytest.raises(ValueError, match="parameter"):
        CkksParams.from_canonical_json("{not json")
    d = json.loads(PRESETS[DEFAULT_PRESET].canonical_json())
    d["format_version"] = 99
    with pytest.raises(ValueError, match="version"):
        CkksParams.from_canonical_json(json.dumps(d))
    text = PRESETS[DEFAULT_PRESET].canonical_json().replace('"scale_bits":46', '"scale_bits":1e400')
    with pytest.raises(ValueError, match="parameter"):
        CkksParams.from_canonical_json(text)
