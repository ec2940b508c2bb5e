import math

import pytest
import torch

from blocks.rl.logprobs import completion_logits, masked_mean, sequence_logprobs, token_entropy, token_logprobs


def test_token_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[1.0, 3.0], [2.0, 2.0]]]))    # p = (1/4, 3/4), (1/2, 1/2)
    got = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert got.flatten().tolist() == pytest.approx([math.log(0.75), math.log(0.5)])


@pytest.mark.parametrize("chunk_rows", [1, 2, 8])
def test_token_logprobs_equal_a_full_log_softmax_with_its_gradient(chunk_rows):
    logits = torch.randn(3, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    got = token_logprobs(logits, torch.where(mask.bool(), targets, -100), mask, chunk_rows=chunk_rows)
    want = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1) * mask
    assert torch.allclose(got, want, atol=1e-6) and (got[mask == 0] == 0).all()
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_want,) = torch.autograd.grad(want.sum(), logits)
    assert torch.allclose(g_got, g_want, atol=1e-6)


def test_low_precision_logits_are_scored_in_fp32():
    logits = torch.randn(2, 3, 7).bfloat16()
    targets = torch.randint(0, 7, (2, 3))
    got = token_logprobs(logits, targets)
    want = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)


def test_entropy():
    uniform, certain = torch.zeros(1, 1, 4), torch.tensor([[[0.0, -torch.inf, -torch.inf]]])
    assert token_entropy(uniform).item() == pytest.approx(math.log(4))
    assert token_entropy(certain).item() == 0.0           # masked vocabulary gives 0, not NaN
    logits = torch.randn(2, 3, 5)
    p = torch.softmax(logits, -1)
    assert torch.allclose(token_entropy(logits, chunk_rows=1), -(p * p.log()).sum(-1), atol=1e-6)


def test_completion_logits_are_aligned_views():
    logits = torch.randn(2, 6, 4)
    input_ids = torch.tensor([[0, 9, 9, 1, 2, 3], [9, 9, 9, 1, 2, 3]])  # prompts of 3 tokens, completions of 3
    sliced, targets = completion_logits(logits, input_ids, prompt_length=3)
    assert targets.tolist() == [[1, 2, 3], [1, 2, 3]]
    assert torch.equal(sliced[:, 0], logits[:, 2]) and sliced.data_ptr() == logits[:, 2].data_ptr()
    with pytest.raises(ValueError):
        completion_logits(logits, input_ids, prompt_length=6)


def test_sequence_sums_and_masked_mean():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    sums, counts = sequence_logprobs(logprobs, mask)
    assert sums.tolist() == [-3.0, -0.5] and counts.tolist() == [2, 1]
    assert masked_mean(logprobs, mask).item() == pytest.approx(-3.5 / 3)
    assert masked_mean(logprobs, torch.zeros_like(mask)).item() == 0.0


def test_backward_keeps_no_vocabulary_sized_copy_of_fp32_logits():
    logits = torch.randn(4, 6, 50, requires_grad=True)
    big = []  # vocabulary-sized tensors autograd saves that are not the logits themselves

    def pack(t):
        if t.numel() >= logits.numel() // 4 and t.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr():
            big.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_logprobs(logits, torch.randint(0, 50, (4, 6)), chunk_rows=2)
    assert big == []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.log_softmax(logits, -1)              # what the helper avoids: a saved [B, T, V] output
    assert big == [(4, 6, 50)]
