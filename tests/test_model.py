"""The MLP and its flat parameter vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from participant.device import resolve_device
from participant.model import build_mlp, flatten_params, load_flat, n_params, param_shapes


def test_shapes_and_order() -> None:
    model = build_mlp(20, (64, 32))
    shapes = param_shapes(model)
    assert [s for _, s in shapes] == [(64, 20), (64,), (32, 64), (32,), (1, 32), (1,)]
    assert n_params(model) == 20 * 64 + 64 + 64 * 32 + 32 + 32 + 1
    assert model(torch.zeros(5, 20)).shape == (5, 1)


def test_flatten_is_row_major_concatenation_and_round_trips() -> None:
    torch.manual_seed(0)
    model = build_mlp(3, (2,))
    flat = flatten_params(model)
    assert flat.dtype == np.float64 and flat.shape == (n_params(model),)
    manual = np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()])
    np.testing.assert_array_equal(flat, manual.astype(np.float64))
    new = np.arange(flat.size, dtype=np.float64) / 10
    first_weight = next(model.parameters())
    load_flat(model, new)
    assert next(model.parameters()) is first_weight  # loaded in place
    np.testing.assert_allclose(flatten_params(model), new, rtol=1e-6)
    np.testing.assert_allclose(first_weight.detach().numpy(), new[:6].reshape(2, 3), rtol=1e-6)
    flat[0] = 123.0  # flatten returns a copy
    assert float(first_weight.detach()[0, 0]) != 123.0


def test_deterministic_under_seed() -> None:
    torch.manual_seed(3)
    a = flatten_params(build_mlp(5))
    torch.manual_seed(3)
    b = flatten_params(build_mlp(5))
    np.testing.assert_array_equal(a, b)


def test_bad_arguments() -> None:
    model = build_mlp(3, (2,))
    with pytest.raises(ValueError, match="vec: shape"):
        load_flat(model, np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        load_flat(model, np.full(n_params(model), np.nan))
    with pytest.raises(ValueError, match="hidden"):
        build_mlp(3, (0,))
    with pytest.raises(ValueError, match="in_features"):
        build_mlp(0)
    with pytest.raises(ValueError, match="dropout"):
        build_mlp(3, dropout=1.0)


def test_device_choice() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
