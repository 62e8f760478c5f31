"""Bad input gets a clear error that names the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neural_persistence as npers

GOOD = np.ones((3, 2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_non_finite_weights(bad: float, dtype: type) -> None:
    x = np.ones((50, 40), dtype=dtype)
    x[17, 3] = bad
    with pytest.raises(npers.NonFiniteWeightsError, match=r"layer 'fc2' contains NaN or infinite weights \(first in row 17"):
        npers.compute({"fc1": GOOD, "fc2": x})


def test_non_finite_bfloat16() -> None:
    x = torch.ones(4, 5, dtype=torch.bfloat16)
    x[2, 2] = float("nan")
    with pytest.raises(ValueError, match="'layer_0' contains NaN"):
        npers.compute([x])


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.ones(5), r"'layer_1' must be a 2-D weight matrix, got 1-D"),
        (np.ones((2, 3, 3)), r"got 3-D .* reshape convolution kernels"),
        (np.ones((0, 4)), r"'layer_1' is empty \(shape \(0, 4\)\)"),
        (np.ones((3, 3), dtype=complex), "complex weights"),
        (np.array([["a"]]), "unsupported dtype"),
        (np.ones((2, 2), dtype=bool), "unsupported dtype"),
    ],
)
def test_bad_shapes_and_dtypes(bad: np.ndarray, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        npers.compute([GOOD, bad])


def test_all_zero_network() -> None:
    with pytest.raises(ValueError, match="every weight of the network is zero"):
        npers.compute([np.zeros((3, 3)), np.zeros((3, 1))])


def test_zero_layer_under_layer_normalization() -> None:
    with pytest.raises(ValueError, match="layer 'b' is all zeros"):
        npers.compute({"a": GOOD, "b": np.zeros((2, 2))}, normalization="layer")


@pytest.mark.parametrize("p", [0.5, 0, -1, float("nan")])
def test_p_below_one(p: float) -> None:
    with pytest.raises(ValueError, match="`p` must be >= 1"):
        npers.compute([GOOD], p=p)


def test_unknown_normalization() -> None:
    with pytest.raises(ValueError, match=r"`normalization` can be one of \('global', 'layer'\), got 'max'"):
        npers.compute([GOOD], normalization="max")


def test_not_a_list_of_layers() -> None:
    with pytest.raises(TypeError, match="for a single matrix use layer_diagram"):
        npers.compute(GOOD)
    with pytest.raises(ValueError, match="no layers given"):
        npers.compute([])


def test_meta_and_sparse_tensors() -> None:
    with pytest.raises(ValueError, match="meta device"):
        npers.compute([torch.empty(3, 3, device="meta")])
    with pytest.raises(TypeError, match="sparse tensors"):
        npers.compute([torch.eye(3).to_sparse()])


def test_bfloat16_bits_must_be_16_bit() -> None:
    with pytest.raises(TypeError, match="16-bit integer array"):
        npers.bfloat16_bits(np.ones((2, 2), dtype=np.float32))


def test_weak_errors_of_the_core_api_name_the_layer() -> None:
    with pytest.raises(TypeError, match=r"layer 'layer_0' has dtype float128 \(128 bits\); use float16"):
        npers.compute([np.ones((3, 2), dtype=np.longdouble)])
    with pytest.raises(ValueError, match=r"layer 'ragged' cannot be read as a 2-D matrix"):
        npers.compute({"ragged": [[1.0, 2.0], [3.0]]})
    with pytest.raises(TypeError, match=r"layer 'm' is a masked array, whose mask neural persistence would ignore"):
        npers.compute({"m": np.ma.masked_array(np.ones((3, 2)), mask=[[0, 1], [0, 0], [0, 0]])})
    with pytest.raises(TypeError, match=r"layer 'c' has complex weights"):
        npers.compute({"c": torch.ones(3, 2, dtype=torch.complex64).conj()})
    with pytest.raises(TypeError, match=r"layer 'f8' has dtype torch.float8_e4m3fn, which numpy cannot read"):
        npers.compute({"f8": torch.ones(3, 2).to(torch.float8_e4m3fn)})


@pytest.mark.parametrize("scale", [np.inf, 0.5, np.nan])
def test_a_scale_that_would_leave_the_diagram_outside_zero_one_is_refused(scale: float) -> None:
    x = np.array([[1.0, -2.0], [0.5, 0.25]])
    with pytest.raises(ValueError, match=r"(must be finite and at least the matrix's max \|w\| \(2.0\))|positive"):
        npers.layer_diagram(x, scale=scale)
    assert npers.layer_diagram(x, scale=4.0).deaths.max() <= 1.0
