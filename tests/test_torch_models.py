"""Real torch models in, the reference layout out; convolutions exact against the materialised unrolled layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neural_persistence as npers
from neural_persistence.sources.conv import UnrolledConv, conv_matrix


def mlp(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6, bias=bias), nn.ReLU(), nn.Linear(6, 4, bias=bias), nn.LayerNorm(4))


def test_mlp_with_bias_equals_hand_built_reference_layout() -> None:
    model = mlp()
    by_hand = [npers.with_bias(model[i].weight.detach().numpy(), model[i].bias.detach().numpy()) for i in (0, 2)]
    assert by_hand[0].shape == (9, 6)
    ours = npers.compute(model, bias=True)
    ref = npers.compute(by_hand)
    assert [layer.name for layer in ours] == ["0", "2"]
    assert [layer.shape for layer in ours] == [(9, 6), (7, 4)]
    np.testing.assert_array_equal(ours.np, ref.np)
    assert ours.mean_normalized_np == ref.mean_normalized_np


def test_by_default_the_weights_alone_as_a_checkpoint_is_measured() -> None:
    """Without ``bias=True`` (the paper's convention) a model is measured as its checkpoint is: weights alone, in
    ``nn.Linear``'s (out, in) orientation."""
    model = mlp()
    ours = npers.compute(model)
    ref = npers.compute([model[0].weight.detach().numpy(), model[2].weight.detach().numpy()])
    np.testing.assert_array_equal(ours.np, ref.np)
    assert [layer.shape for layer in ours] == [(6, 8), (4, 6)]
    np.testing.assert_array_equal(npers.compute(model, bias=False).np, ours.np)


def test_layers_of_lists_skipped_modules_with_reasons() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.BatchNorm1d(8))
    entries = {e.name: e for e in npers.layers_of(model, bias=True)}
    assert entries["1"].measured and entries["1"].shape == (9, 8)
    assert not entries["0"].measured and "embedding" in entries["0"].reason
    assert not entries["2"].measured and "normalization" in entries["2"].reason
    assert not entries["3"].measured


def test_include_exclude_patterns() -> None:
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(4, 4))
    model.add_module("head", nn.Linear(4, 2))
    assert [layer.name for layer in npers.compute(model, include="enc*")] == ["encoder"]
    assert [layer.name for layer in npers.compute(model, exclude=["head"])] == ["encoder"]


def test_no_measurable_layer_names_the_module_types() -> None:
    with pytest.raises(ValueError, match=r"no measurable layer .* found module types \['LayerNorm', 'ReLU'"):
        npers.compute(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)))


def test_multihead_attention_split_into_q_k_v() -> None:
    torch.manual_seed(1)
    attn = nn.MultiheadAttention(embed_dim=8, num_heads=2)
    res = npers.compute(attn, bias=True)
    assert [layer.name for layer in res] == ["q", "k", "v", "out_proj"]
    w, b = attn.in_proj_weight.detach().numpy(), attn.in_proj_bias.detach().numpy()
    parts = [npers.with_bias(w[i * 8 : (i + 1) * 8], b[i * 8 : (i + 1) * 8]) for i in range(3)]
    parts.append(npers.with_bias(attn.out_proj.weight.detach().numpy(), attn.out_proj.bias.detach().numpy()))
    np.testing.assert_array_equal(res.np, npers.compute(parts).np)


def test_hugging_face_conv1d_is_in_out() -> None:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(2)
    layer = Conv1D(nf=5, nx=3)  # weight (3, 5): (in, out)
    nn.init.normal_(layer.bias)
    res = npers.compute(nn.Sequential(layer), bias=True)
    assert res.layers[0].shape == (4, 5)
    ref = npers.compute([npers.with_bias(layer.weight.detach().numpy(), layer.bias.detach().numpy(), "in_out")])
    np.testing.assert_array_equal(res.np, ref.np)


def test_training_mode_and_dtype_do_not_matter() -> None:
    model = mlp()
    a = npers.compute(model.train(), bias=True).np
    b = npers.compute(model.eval(), bias=True).np
    np.testing.assert_array_equal(a, b)
    half = npers.compute(mlp(bias=False).to(torch.bfloat16), bias=False)
    assert len(half) == 2


def test_meta_and_quantized_modules_get_clear_errors() -> None:
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="meta device"):
        npers.compute(meta)
    sparse = nn.Linear(3, 3)
    sparse.weight = nn.Parameter(sparse.weight.detach().to_sparse())
    with pytest.raises(TypeError, match="'0' has sparse weights"):
        npers.compute(nn.Sequential(sparse))
    quantized = torch.ao.nn.quantized.Linear(4, 4)
    with pytest.raises(TypeError, match=r"module '0' \(Linear\) is quantized"):
        npers.compute(nn.Sequential(quantized))


def unrolled_matrix(conv: nn.Module, input_shape: tuple[int, ...], bias: bool) -> np.ndarray:
    """Materialise the unrolled layer: column-by-column response to one-hot inputs, bias as an extra row."""
    n_in = int(np.prod(input_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *input_shape)
    ref = conv.double()
    with torch.no_grad():
        out = torch.nn.functional.__dict__[f"conv{len(input_shape) - 1}d"](
            eye, ref.weight, None, ref.stride, ref.padding, ref.dilation, ref.groups
        )
    matrix = out.reshape(n_in, -1).numpy()
    if bias:
        n_pos = int(np.prod(out.shape[2:]))
        matrix = np.vstack([matrix, np.repeat(ref.bias.detach().numpy(), n_pos)[None]])
    return matrix


CONVS = [
    (nn.Conv1d(2, 3, 3), (2, 9)),
    (nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2), (2, 11)),
    (nn.Conv2d(2, 3, 3), (2, 6, 5)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2), (4, 7, 7)),
    (nn.Conv2d(3, 2, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (3, 6, 7)),
    (nn.Conv2d(2, 2, 2, stride=2), (2, 6, 6)),  # non-overlapping: the closed form is exact here
    (nn.Conv3d(1, 2, 2), (1, 3, 4, 3)),
    (nn.Conv2d(2, 2, 3, padding="same"), (2, 5, 5)),
]


@pytest.mark.parametrize("conv,input_shape", CONVS, ids=[f"{c}-{s}" for c, s in CONVS])
@pytest.mark.parametrize("bias", [True, False])
def test_exact_conv_equals_materialised_unrolled_matrix(conv: nn.Module, input_shape: tuple, bias: bool) -> None:
    torch.manual_seed(3)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    unrolled = conv_matrix(conv, "c", "exact", input_shape, bias)
    dense = unrolled_matrix(conv, input_shape, bias)
    assert unrolled.shape == dense.shape
    tree = unrolled.spanning_tree()
    np.testing.assert_allclose(tree.values, npers.layer_tree(dense).values, rtol=1e-15)
    assert tree.max_abs == np.abs(dense).max()


def test_conv_modes_through_compute() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    exact = npers.compute(model, conv="exact", input_shape=(1, 6, 6), bias=True)
    assert exact.layers[0].shape == (1 * 36 + 1, 2 * 16)
    dense = npers.compute(
        [unrolled_matrix(model[0], (1, 6, 6), True),
         npers.with_bias(model[3].weight.detach().numpy(), model[3].bias.detach().numpy())]
    )
    np.testing.assert_allclose(exact.np, dense.np, rtol=1e-12)
    kernel = npers.compute(model, bias=True)  # default: the kernel as a dense proxy
    assert kernel.layers[0].shape == (10, 2)
    with pytest.raises(ValueError, match="needs the input size"):
        npers.compute(model, conv="exact")


def test_approx_conv_error_table() -> None:
    """The closed form is exact without overlap, and within a stated error with it (printed as a table)."""
    rows = []
    for conv, input_shape in CONVS:
        torch.manual_seed(5)
        nn.init.normal_(conv.weight)
        nn.init.normal_(conv.bias)
        exact = npers.compute({"c": conv_matrix(conv, "c", "exact", input_shape, True)}).layers[0]
        approx = npers.compute({"c": conv_matrix(conv, "c", "approx", input_shape, True)}).layers[0]
        rel = abs(approx.normalized_np - exact.normalized_np) / exact.normalized_np
        rows.append((str(conv), exact.normalized_np, approx.normalized_np, rel))
    print("\nconv | exact normalized NP | approx | relative error")
    for row in rows:
        print(f"{row[0]} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.3f}")
    assert max(r[3] for r in rows) < 0.5
    non_overlapping = [r for r in rows if r[0].startswith("Conv2d(2, 2, kernel_size=(2, 2), stride=(2, 2)")]
    assert non_overlapping[0][3] < 1e-12
    assert isinstance(conv_matrix(CONVS[0][0], "c", "approx", CONVS[0][1], True), UnrolledConv)


def test_multihead_attention_with_its_own_kdim_names_q_k_v_and_filters_them() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.MultiheadAttention(embed_dim=8, num_heads=2, kdim=5, vdim=6))
    names = [layer.name for layer in npers.compute(model)]
    assert names == ["0.q", "0.k", "0.v", "0.out_proj"]
    assert [layer.name for layer in npers.compute(model, exclude="0.v")] == ["0.q", "0.k", "0.out_proj"]
    assert [layer.name for layer in npers.compute(model, include="0.q")] == ["0.q"]


def test_a_config_with_head_counts_per_stage_warns_and_measures_whole() -> None:
    import transformers as tf

    torch.manual_seed(0)
    model = tf.SegformerModel(tf.SegformerConfig(hidden_sizes=[8, 16, 16, 16], num_attention_heads=[1, 2, 2, 2],
                                                 depths=[1, 1, 1, 1], decoder_hidden_size=16))
    with pytest.warns(UserWarning, match=r"num_attention_heads must be a positive integer, got \[1, 2, 2, 2\]"):
        result = npers.compute(model, per_head=True)
    assert len(result) > 0 and all(layer.info.get("head", -1) == -1 for layer in result)


def test_fused_experts_in_an_unknown_layout_are_left_out_with_a_reason() -> None:
    from neural_persistence.sources.plan import PlanOptions, plan
    from neural_persistence.sources.transformer_layout import HeadConfig

    name = "model.layers.0.feed_forward.experts.gate_up_proj"  # Llama 4 stores it (experts, hidden, 2 x inter)
    result = plan([(name, (2, 8, 12))], HeadConfig(model_type="llama4", hidden=8), PlanOptions())
    assert result.tensors == [] and "layout is not known for model type 'llama4'" in result.problems[0][1]
    known = plan([(name, (2, 12, 8))], HeadConfig(model_type="mixtral", hidden=8), PlanOptions())
    assert [s.role for s in known.tensors[0].specs] == ["mlp_gate", "mlp_up"] * 2
