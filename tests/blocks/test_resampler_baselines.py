"""Baselines for the resampler slot: the MLP projector and the Qwen2.5-VL-style patch merger."""

import pytest
import torch

from blocks.resampler import MLPProjector, PatchMerger, mlp_projector_tiny, patch_merger_tiny

# Image slices of odd and even sizes, a 3-frame video group (odd frame count) and a 2-frame group.
TGT_SIZES = [(4, 6), (3, 5), (2, 2), (2, 2), (2, 2), (5, 3), (5, 3)]
GROUP_SIZES = [1, 1, 3, 2]


def _batch(sizes=TGT_SIZES, groups=GROUP_SIZES, width=64):
    tgt_sizes = torch.tensor(sizes)
    x = torch.randn(int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).sum()), width, requires_grad=True)
    temporal_ids = torch.tensor([-1 if g == 1 else 0 for g in groups for _ in range(g)])
    return x, tgt_sizes, temporal_ids, torch.tensor(groups)


def _groups_of_sizes(sizes=TGT_SIZES, groups=GROUP_SIZES):
    starts = torch.tensor([0] + groups).cumsum(0).tolist()
    return [sizes[a:b] for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("build", [mlp_projector_tiny, patch_merger_tiny,
                                   lambda: MLPProjector(64, 32, pooled_size=None)])
def test_output_rows_equal_the_sum_of_tokens_per_group_and_grads_flow(build):
    block = build()
    x, tgt_sizes, temporal_ids, group_sizes = _batch()
    out = block(x, tgt_sizes, temporal_ids, group_sizes)
    assert out.shape == (sum(block.tokens_per_group(g) for g in _groups_of_sizes()), block.out_dim)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    assert x.grad.abs().sum(1).min() > 0  # no patch is dropped


def test_token_counts():
    pooled, unpooled, merger = mlp_projector_tiny(), MLPProjector(64, 64, None), patch_merger_tiny()
    assert pooled.tokens_per_group([(2, 2), (30, 40)]) == 2 * 16
    assert unpooled.tokens_per_group([(2, 2), (30, 40)]) == 4 + 1200
    assert merger.tokens_per_group([(4, 6)]) == 6             # an image: duplicated frame, 2x2 merge
    assert merger.tokens_per_group([(5, 3)] * 3) == 2 * 3 * 2  # ceil(3/2) * ceil(5/2) * ceil(3/2)
    with pytest.raises(ValueError, match="one size"):
        merger.tokens_per_group([(2, 2), (2, 4)])


def test_mlp_projector_pools_each_frame_on_its_own_grid():
    block = MLPProjector(8, 8, pooled_size=(2, 2))
    x = torch.randn(4 * 4 + 2 * 2, 8)
    out = block(x, torch.tensor([[4, 4], [2, 2]]), torch.tensor([-1, -1]), torch.tensor([1, 1]))
    grid = x[:16].view(4, 4, 8)
    top_right = grid[:2, 2:].reshape(4, 8).mean(0)
    torch.testing.assert_close(out[1], block.mlp(top_right))
    torch.testing.assert_close(out[4:], block.mlp(x[16:]))  # a 2x2 grid pooled to 2x2 is unchanged


def test_patch_merger_concatenates_2x2_patches_of_2_frames():
    frames = torch.arange(2 * 2 * 2 * 1, dtype=torch.float32).view(2, 2, 2, 1)  # [f, h, w, C=1]
    merged = PatchMerger._merge_group(frames)
    assert merged.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]  # frame-major, then row-major 2x2 block


def test_patch_merger_pads_odd_grids_and_frame_counts_by_repetition():
    frames = torch.arange(9, dtype=torch.float32).view(1, 3, 3, 1)  # one frame, 3x3 patches
    merged = PatchMerger._merge_group(frames)
    assert merged.shape == (4, 8)
    assert merged[0].tolist() == [0, 1, 3, 4] * 2  # the single frame is repeated along time
    assert merged[3].tolist() == [8, 8, 8, 8] * 2  # bottom-right block: the last row/col repeated


def test_patch_merger_rejects_groups_of_different_frame_sizes():
    x, tgt_sizes, temporal_ids, group_sizes = _batch([(2, 2), (2, 4)], [2])
    with pytest.raises(ValueError, match=r"slices 0\.\.1"):
        patch_merger_tiny()(x, tgt_sizes, temporal_ids, group_sizes)
