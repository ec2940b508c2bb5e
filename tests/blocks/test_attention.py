"""packed_attention: every backend equals an independent per-segment reference, forward and backward."""

import pytest
import torch

from blocks.attention import (
    block_diagonal_mask,
    packed_attention,
    xformers_available,
    xformers_block_diagonal_mask,
)

HEADS, HEAD_DIM = 2, 8
CPU_BACKENDS = ["eager", "sdpa", "auto"]
# (q_seqlens, kv_seqlens): self-attention with a length-1 segment; cross-attention with different
# q/kv lengths per segment (several sdpa buckets); one shape only (sdpa's single batched call).
CASES = {
    "self": ([5, 1, 9, 9], None),
    "cross": ([4, 4, 1, 3], [7, 1, 30, 7]),
    "one_shape": ([4, 4, 4], [6, 6, 6]),
}


def _per_segment_reference(q, k, v, q_lens, kv_lens):
    """Loop over segments with a plain softmax: independent of the packed code paths."""
    outputs, q_start, kv_start = [], 0, 0
    for lq, lk in zip(q_lens, kv_lens):
        qs, ks, vs = q[q_start:q_start + lq], k[kv_start:kv_start + lk], v[kv_start:kv_start + lk]
        weights = (torch.einsum("qhd,khd->hqk", qs, ks) / HEAD_DIM ** 0.5).softmax(-1)
        outputs.append(torch.einsum("hqk,khd->qhd", weights, vs))
        q_start, kv_start = q_start + lq, kv_start + lk
    return torch.cat(outputs)


def _inputs(q_lens, kv_lens, device="cpu"):
    kv_lens = q_lens if kv_lens is None else kv_lens
    q = torch.randn(sum(q_lens), HEADS, HEAD_DIM, device=device, requires_grad=True)
    k = torch.randn(sum(kv_lens), HEADS, HEAD_DIM, device=device, requires_grad=True)
    v = torch.randn(sum(kv_lens), HEADS, HEAD_DIM, device=device, requires_grad=True)
    return q, k, v, kv_lens


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_backend_matches_reference_forward_and_backward(backend, case):
    q_lens, kv_lens = CASES[case]
    q, k, v, kv_lens_resolved = _inputs(q_lens, kv_lens)
    grad_out = torch.randn(sum(q_lens), HEADS, HEAD_DIM)

    out = packed_attention(q, k, v, q_lens, kv_lens, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    expected = _per_segment_reference(q, k, v, q_lens, kv_lens_resolved)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad_out)

    assert out.shape == (sum(q_lens), HEADS, HEAD_DIM)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_queries_do_not_see_other_segments():
    q, k, v, _ = _inputs([3, 3], [4, 4])
    out = packed_attention(q, k, v, [3, 3], [4, 4], backend="sdpa")
    v_changed = v.detach().clone()
    v_changed[4:] += 100.0  # only segment 1's values
    out_changed = packed_attention(q, k, v_changed, [3, 3], [4, 4], backend="sdpa")
    assert torch.equal(out[:3], out_changed[:3])
    assert (out[3:] - out_changed[3:]).abs().min() > 50


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_empty_key_segment_gives_zeros(backend):
    q, k, v, _ = _inputs([2, 3], [0, 5])
    out = packed_attention(q, k, v, [2, 3], [0, 5], backend=backend)
    assert torch.equal(out[:2], torch.zeros(2, HEADS, HEAD_DIM))
    torch.testing.assert_close(out[2:], _per_segment_reference(q[2:], k, v, [3], [5]))


def test_block_diagonal_mask_layout():
    mask = block_diagonal_mask([2, 1], [1, 3])
    assert mask.tolist() == [[True, False, False, False],
                             [True, False, False, False],
                             [False, True, True, True]]


def test_xformers_mask_materializes_to_the_block_diagonal_mask():
    if not xformers_available():
        pytest.skip("xformers does not import here")
    q_lens, kv_lens = [4, 1, 3], [7, 1, 30]
    bias = xformers_block_diagonal_mask(q_lens, kv_lens, device=torch.device("cpu"))
    materialized = bias.materialize((sum(q_lens), sum(kv_lens)))
    expected = block_diagonal_mask(q_lens, kv_lens)
    assert set(materialized.unique().tolist()) == {0.0, float("-inf")}
    assert torch.equal(materialized == 0, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(CASES))
def test_xformers_matches_sdpa_on_cuda(case):
    if not xformers_available():
        pytest.skip("xformers does not import here")
    q_lens, kv_lens = CASES[case]
    q, k, v, _ = _inputs(q_lens, kv_lens, device="cuda")
    out_xformers = packed_attention(q, k, v, q_lens, kv_lens, backend="xformers")
    out_sdpa = packed_attention(q, k, v, q_lens, kv_lens, backend="sdpa")
    torch.testing.assert_close(out_xformers, out_sdpa, atol=2e-5, rtol=2e-5)
    grad_out = torch.randn_like(out_sdpa)
    for g_x, g_s in zip(torch.autograd.grad(out_xformers, (q, k, v), grad_out),
                        torch.autograd.grad(out_sdpa, (q, k, v), grad_out)):
        torch.testing.assert_close(g_x, g_s, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("q_lens, kv_lens, backend, message", [
    ([3, 3], [4, 4, 0], "sdpa", "query segments"),   # segment counts differ
    ([3, 2], [4, 4], "sdpa", "seqlens sum"),          # q rows != sum(q_seqlens)
    ([3, 3], [4, 5], "eager", "seqlens sum"),         # k rows != sum(kv_seqlens)
    ([3, 3], [4, 4], "flash", "unknown attention backend"),
    ([3, 3], [4, 4], "xformers", "needs CUDA"),       # CPU tensors
])
def test_bad_arguments_raise_value_error(q_lens, kv_lens, backend, message):
    q = torch.randn(6, HEADS, HEAD_DIM)
    k = v = torch.randn(8, HEADS, HEAD_DIM)
    with pytest.raises(ValueError, match=message):
        packed_attention(q, k, v, q_lens, kv_lens, backend=backend)
