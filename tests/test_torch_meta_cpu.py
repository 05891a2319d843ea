"""Operations whose meta kernel refuses what the CPU kernel runs (frontends/torch_meta_cpu.py): the answer
for meta tensors is the CPU kernel's output (dtype, shape, strides) for CPU tensors laid out alike. The
rule declines every call that the CPU kernel refuses. A mixture of experts, read by running it on meta
tensors, counts its grouped products."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paramcalc
from paramcalc.frontends.torch_meta_cpu import cpu_rules

from .transformers_zoo import load

torch = pytest.importorskip("torch")
aten = torch.ops.aten


@st.composite
def grouped_calls(draw):
    """_grouped_mm's operands in each layout (2-D or 3-D each), row-major or transposed, with row widths
    that meet the 16-byte alignment or miss it, in the dtypes the CPU runs and one it refuses; offsets
    present or not, of int32 or int64."""
    groups, rows, inner, cols = (draw(st.integers(1, 3)), draw(st.sampled_from((8, 16, 3))), draw(st.sampled_from((8, 16, 24, 5))),
                                 draw(st.sampled_from((8, 16, 24, 3))))
    dtype = draw(st.sampled_from((torch.float32, torch.float32, torch.float16, torch.bfloat16, torch.float64)))
    a_3d, b_3d = draw(st.booleans()), draw(st.booleans())

    def matrix(shape, transposed):
        if transposed:
            return torch.randn(*shape[:-2], shape[-1], shape[-2]).to(dtype).transpose(-2, -1)
        return torch.randn(*shape).to(dtype)

    a = matrix((groups, rows, inner) if a_3d else (rows * groups, inner) if b_3d else (rows, inner * groups),
               draw(st.booleans()))
    b = matrix((groups, inner, cols) if b_3d else (inner * (1 if a_3d else groups), cols * (groups if a_3d else 1)),
               draw(st.booleans()))
    if a_3d and b_3d:
        offs = None if draw(st.booleans()) else torch.arange(1, groups + 1, dtype=torch.int32)
    else:
        # cumulative ends of each group along the axis it splits: a's rows, the contraction, or b's columns
        length = inner * groups if not (a_3d or b_3d) else cols * groups if a_3d else rows * groups
        ends = [length * (g + 1) // groups for g in range(groups)]
        offs = torch.tensor(ends, dtype=draw(st.sampled_from((torch.int32, torch.int32, torch.int32, torch.int64))))
    return a, b, offs


def on_meta(t):
    return None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


@settings(max_examples=300, deadline=None)
@given(grouped_calls())
def test_grouped_mm_is_answered_as_the_cpu_kernel_makes_it(call):
    a, b, offs = call
    answer = cpu_rules()[aten._grouped_mm.default]((on_meta(a), on_meta(b)), {"offs": on_meta(offs)})
    try:
        theirs = torch._grouped_mm(a, b, offs=offs)
    except RuntimeError:
        assert answer is None, f"answered a call the CPU refuses: {tuple(answer.shape)}"
        return
    assert answer is not None, "declined a call the CPU runs"
    assert (answer.dtype, tuple(answer.shape), answer.stride()) == (theirs.dtype, tuple(theirs.shape), theirs.stride())


def test_a_mixture_of_experts_counts_each_routed_row_once_per_expert_product():
    """A Mixtral of 2 layers, 4 experts, 2 per token: each of the 16 tokens' 2 routed rows goes through
    one expert's gate-up (64 -> 2 x 128) and down (128 -> 64) products, which torch's meta kernel refused
    in float32 before."""
    transformers = load()
    if transformers is None:
        pytest.skip("transformers is not installed")
    config = transformers.MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=1000, num_local_experts=4,
                                        num_experts_per_tok=2)
    with torch.device("meta"):
        model = transformers.MixtralForCausalLM(config).eval()
    est = paramcalc.estimate(model, input_shape={"input_ids": (16,)}, batch_size=1)
    grouped = [r for r in est.layers if r.type == "_grouped_mm"]
    assert [r.macs for r in grouped] == [16 * 2 * 64 * 256, 16 * 2 * 128 * 64] * 2
    assert [r.input_shapes[:2] for r in grouped[:2]] == [((32, 64), (4, 64, 256)), ((32, 128), (4, 128, 64))]
    assert est.params == sum(p.numel() for p in model.parameters())
