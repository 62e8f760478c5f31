"""The fast spanning-tree engine equals the slow oracles exactly, on every path, dtype and layout."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import kruskal_tree, scipy_tree

import neural_persistence as npers
from neural_persistence.core import kernels, spanning_tree, to_keys, tree_values
from neural_persistence.core.stacked import tree_values_stack
from neural_persistence.core.weights import to_key_stack

# Every way the engine can split the work; the answer must never depend on it.
ENGINE_PATHS: dict[str, dict] = {
    "default": {},
    "threshold": {"small_layer": 0},
    "few-edges-then-boruvka": {"small_layer": 0, "edges_per_vertex": 0.05},
    "no-edges-at-all": {"small_layer": 0, "edges_per_vertex": 1e-9},
    "overflowing-buffer": {"small_layer": 0, "capacity": 1},
    "filling-buffer": {"small_layer": 0, "capacity": 6},  # the last few slots, written one edge at a time
    "blocks": {"small_layer": 0, "blocks": 3},
    "blocks-overflowing": {"small_layer": 0, "blocks": 3, "capacity": 2},
}


def engine(matrix, path: str) -> np.ndarray:
    options = dict(ENGINE_PATHS[path])
    blocks = options.pop("blocks", 1)
    return tree_values(to_keys(matrix), blocks, **options).values


def int8_quantised(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max() / 127 or 1.0
    return np.round(x / scale).astype(np.int8)


def to_bf16(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)


DTYPES: dict[str, Callable[[np.ndarray], object]] = {
    "float64": lambda x: x,
    "float32": lambda x: x.astype(np.float32),
    "float16": lambda x: x.astype(np.float16),
    "bfloat16-torch": to_bf16,
    "bfloat16-bits": lambda x: npers.bfloat16_bits(to_bf16(x).view(torch.int16).numpy()),
    "int8": int8_quantised,
    "int16": lambda x: np.round(x * 1000).astype(np.int16),
    "int64": lambda x: np.round(x * 1e6).astype(np.int64),
    "uint8": lambda x: np.round(np.abs(x) * 40).clip(0, 255).astype(np.uint8),
    "float32-fortran": lambda x: np.asfortranarray(x.astype(np.float32)),
    "float64-strided": lambda x: np.repeat(x, 2, axis=1)[:, ::2],
    "torch-float32": lambda x: torch.from_numpy(x.astype(np.float32)),
}


def oracle_input(converted: object) -> object:
    if isinstance(converted, npers.BFloat16Bits):
        return torch.from_numpy(converted.bits.view(np.int16)).view(torch.bfloat16)
    return converted


@st.composite
def weight_matrices(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 60))
    m = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    style = draw(st.sampled_from(["normal", "ties", "few-values", "zero-rows", "row-scaled", "all-equal"]))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m))
    if style == "ties":
        x = np.round(x, 1)
    elif style == "few-values":
        x = rng.choice([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0], size=(n, m))
    elif style == "zero-rows":
        x[rng.random(n) < 0.3] = 0.0
        x[:, rng.random(m) < 0.3] = 0.0
    elif style == "row-scaled":
        x *= 10.0 ** rng.uniform(-3, 0, size=(n, 1))
    elif style == "all-equal":
        x = np.full((n, m), -0.75)
    return x


@pytest.mark.parametrize("path", list(ENGINE_PATHS))
@given(matrix=weight_matrices(), dtype=st.sampled_from(list(DTYPES)))
@settings(max_examples=60, deadline=None)
def test_engine_equals_kruskal(path: str, matrix: np.ndarray, dtype: str) -> None:
    converted = DTYPES[dtype](matrix)
    expected = kruskal_tree(oracle_input(converted))
    np.testing.assert_array_equal(engine(converted, path), expected)


@given(matrix=weight_matrices(), blocks=st.sampled_from([1, 2]))
@settings(max_examples=40, deadline=None)
def test_64_bit_vertex_numbers_equal_kruskal(matrix: np.ndarray, blocks: int) -> None:
    """Layers too big for 32-bit vertex numbers (n + m >= 2**31) take the 64-bit path; force it on small ones."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spanning_tree, "INT32_VERTICES", 0)
        got = tree_values(to_keys(matrix), blocks, small_layer=0, edges_per_vertex=0.5).values
    np.testing.assert_array_equal(got, kruskal_tree(matrix))


@given(matrix=weight_matrices())
@settings(max_examples=40, deadline=None)
def test_kruskal_oracle_equals_scipy(matrix: np.ndarray) -> None:
    np.testing.assert_array_equal(kruskal_tree(matrix), scipy_tree(matrix))


@pytest.mark.parametrize("style", ["normal", "int8", "rounded", "row-scaled", "col-scaled", "block-diagonal"])
# (2000, 300): few columns of a group of rows hold edges; (40, 3000): most do, several rows of a quad at once.
@pytest.mark.parametrize("shape", [(200, 700), (640, 96), (2000, 300), (40, 3000)])
def test_large_hard_inputs_equal_scipy(style: str, shape: tuple[int, int]) -> None:
    """Big enough for the threshold path with its defaults; hard inputs may cost time, never exactness."""
    rng = np.random.default_rng(len(style) * 7 + shape[0])
    x = rng.standard_normal(shape).astype(np.float32)
    if style == "int8":
        x = int8_quantised(x)
    elif style == "rounded":
        x = np.round(x, 2)
    elif style == "row-scaled":
        x *= np.float32(10.0) ** rng.uniform(-3, 0, size=(shape[0], 1)).astype(np.float32)
    elif style == "col-scaled":
        x *= np.float32(10.0) ** rng.uniform(-3, 0, size=(1, shape[1])).astype(np.float32)
    elif style == "block-diagonal":  # two strong blocks joined only by weak edges
        x *= 1e-3
        x[: shape[0] // 2, : shape[1] // 2] *= 1000
        x[shape[0] // 2 :, shape[1] // 2 :] *= 1000
    expected = scipy_tree(x)
    np.testing.assert_array_equal(tree_values(to_keys(x)).values, expected)
    np.testing.assert_array_equal(tree_values(to_keys(x), blocks=2).values, expected)


def test_more_groups_of_rows_than_16_bits_count() -> None:
    """Group numbers are as wide as the keys where they fit (16 bits for float16), wider on taller layers (checked on
    ``group_dtype`` itself: a number that wrapped would only slow the search for a column's best row, not change the
    answer). Then a layer of 2**20 + 40 rows, whose third column holds no collected edge and has its maximum in the
    last group, is measured exactly with 32-bit group numbers: against the path that collects every edge (which
    never looks up a group)."""
    n = kernels.GROUP * 2**16 + 40
    assert spanning_tree.group_dtype(n - 40, np.dtype("u2")) == np.dtype("u2")
    assert spanning_tree.group_dtype(n, np.dtype("u2")) == np.dtype("u4")
    assert spanning_tree.group_dtype(n, np.dtype("u1")) == np.dtype("u4")
    assert spanning_tree.group_dtype(n, np.dtype("u8")) == np.dtype("u8")
    x = np.random.default_rng(5).standard_normal((n, 3)).astype(np.float16)
    x[:, 2] *= np.float16(1e-3)
    x[-1, 2] = np.float16(0.01)
    got = tree_values(to_keys(x))
    every_edge = tree_values(to_keys(x), small_layer=x.size)
    np.testing.assert_array_equal(got.values, every_edge.values)
    assert got.max_abs == every_edge.max_abs


def test_bfloat16_inputs_agree() -> None:
    x = np.random.default_rng(3).normal(size=(40, 30))
    bf = to_bf16(x)
    via_torch = npers.layer_diagram(bf)
    via_bits = npers.layer_diagram(npers.bfloat16_bits(bf.view(torch.int16).numpy()))
    via_float = npers.layer_diagram(bf.float().numpy())
    np.testing.assert_array_equal(via_torch.deaths, via_float.deaths)
    np.testing.assert_array_equal(via_bits.deaths, via_float.deaths)


def test_no_copy_of_big_layers() -> None:
    """The engine reads float bits in place: the key view shares memory with the caller's array."""
    x = np.zeros((300, 200), dtype=np.float32)
    assert np.shares_memory(to_keys(x).data, x)
    f = np.asfortranarray(x)
    assert np.shares_memory(to_keys(f).data, f)
    t = torch.zeros(30, 20, dtype=torch.bfloat16)
    assert to_keys(t).data.__array_interface__["data"][0] == t.data_ptr()


def test_split_layers_from_many_threads_at_once(pool: ThreadPoolExecutor) -> None:
    """Python threads may each split a layer over numba's threads at the same time (checkpoint analysis does)."""
    rng = np.random.default_rng(11)
    layers = [rng.standard_normal((300, 500)).astype(np.float32) for _ in range(6)]
    expected = [kruskal_tree(x) for x in layers]
    got = list(pool.map(lambda x: tree_values(to_keys(x), blocks=2).values, layers))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _tree_in_child(x: np.ndarray) -> np.ndarray:
    return npers.layer_tree(x).values


def test_forked_child_after_parallel_work() -> None:
    """GNU OpenMP cannot run in a child forked after it started: a forked child measures without it."""
    import multiprocessing

    x = np.random.default_rng(12).standard_normal((1100, 1000)).astype(np.float32)  # big enough to be split
    expected = npers.layer_tree(x).values  # starts numba's threads in this process
    with multiprocessing.get_context("fork").Pool(1) as child:
        np.testing.assert_array_equal(child.apply_async(_tree_in_child, (x,)).get(timeout=120), expected)


@given(matrix=weight_matrices(), dtype=st.sampled_from(["float32", "bfloat16-bits", "int8"]))
@settings(max_examples=40, deadline=None)
def test_strided_matrices_read_in_place(matrix: np.ndarray, dtype: str) -> None:
    """Big strided matrices are read without a copy (small ones are copied first): the same answer."""
    import neural_persistence.core.weights as weights

    converted = DTYPES[dtype](np.repeat(matrix, 2, axis=1))
    bits = converted.bits if isinstance(converted, npers.BFloat16Bits) else converted
    strided = bits[:, ::2]
    view = npers.bfloat16_bits(strided) if isinstance(converted, npers.BFloat16Bits) else strided
    expected = kruskal_tree(oracle_input(view))
    saved, weights.STRIDED_COPY_BYTES = weights.STRIDED_COPY_BYTES, 0
    try:
        for path in ("default", "threshold", "blocks"):
            np.testing.assert_array_equal(engine(view, path), expected)
    finally:
        weights.STRIDED_COPY_BYTES = saved


# The paths of a stack (attention heads measured in one call); overflow and NaN hand a layer to `tree_values`.
STACK_PATHS = {name: options for name, options in ENGINE_PATHS.items() if "blocks" not in options}


@st.composite
def weight_stacks(draw: st.DrawFn) -> np.ndarray:
    """Same-shaped matrices, each in a style of its own (a stack of heads can mix easy and hard ones)."""
    n, m, h = draw(st.integers(1, 40)), draw(st.integers(1, 50)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    styles = draw(st.lists(st.sampled_from(["normal", "ties", "few-values", "zero-rows", "all-equal"]), min_size=h,
                           max_size=h))
    rng = np.random.default_rng(seed)
    layers = []
    for style in styles:
        x = rng.normal(size=(n, m)) * 10.0 ** rng.uniform(-2, 2)
        if style == "ties":
            x = np.round(x, 1)
        elif style == "few-values":
            x = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(n, m))
        elif style == "zero-rows":
            x[rng.random(n) < 0.3] = 0.0
        elif style == "all-equal":
            x = np.full((n, m), 0.5)
        layers.append(x)
    return np.stack(layers)


@pytest.mark.parametrize("path", list(STACK_PATHS))
@given(stack=weight_stacks(), dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16-bits", "int8",
                                                      "int64", "uint8", "torch-float32"]))
@settings(max_examples=40, deadline=None)
def test_stack_equals_each_layer_alone(path: str, stack: np.ndarray, dtype: str) -> None:
    converted = DTYPES[dtype](stack)
    got = tree_values_stack(to_key_stack(converted), [f"head {k}" for k in range(len(stack))], **STACK_PATHS[path])
    bits = converted.bits if isinstance(converted, npers.BFloat16Bits) else converted
    for k, tree in enumerate(got):
        layer = npers.bfloat16_bits(bits[k]) if isinstance(converted, npers.BFloat16Bits) else bits[k]
        alone = tree_values(to_keys(layer))
        np.testing.assert_array_equal(tree.values, kruskal_tree(oracle_input(layer)))
        assert (tree.max_abs, tree.shape) == (alone.max_abs, alone.shape)


def test_stack_names_the_layer_with_nan() -> None:
    stack = np.random.default_rng(5).normal(size=(3, 20, 30))
    stack[1, 4, 7] = np.nan
    with pytest.raises(ValueError, match="'head 1' contains NaN"):
        tree_values_stack(to_key_stack(stack), ["head 0", "head 1", "head 2"])


def test_stack_of_wrong_dimensions_is_refused() -> None:
    with pytest.raises(ValueError, match="stack of 2-D weight matrices"):
        to_key_stack(np.ones((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        to_key_stack(np.ones((2, 0, 3)))
