"""The MiniCPM-V perceiver resampler: golden parity with the official code, packing, init, meta build."""

import json

import pytest
import torch
from safetensors.torch import load_file

from blocks.positions import packed_sincos_2d, sincos_2d, temporal_sincos
from blocks.resampler import (
    PerceiverResampler,
    resampler2d_tiny,
    resampler3d,
    resampler3d_mcpv45,
    resampler3d_tiny,
)

GOLDEN_TOLERANCE = 4e-6  # the README's parity bound, fp32 against the official resampler
OFFICIAL_KEYS = {"query", "proj", "kv_proj.weight", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                 "attn.out_proj.bias", "ln_q.weight", "ln_q.bias", "ln_kv.weight", "ln_kv.bias", "ln_post.weight",
                 "ln_post.bias"}
# A mixed packed batch: two image slices (groups of one), a 3-frame video group with ragged frames,
# a 1-frame video group.
MIXED = {"tgt_sizes": [(4, 5), (3, 3), (2, 4), (2, 4), (3, 2), (1, 1)], "temporal_ids": [-1, -1, 0, 5, 10, 7],
         "group_sizes": [1, 1, 3, 1]}


def _mixed_batch(width: int = 64):
    tgt_sizes = torch.tensor(MIXED["tgt_sizes"])
    x = torch.randn(int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).sum()), width)
    return x, tgt_sizes, torch.tensor(MIXED["temporal_ids"]), torch.tensor(MIXED["group_sizes"])


@pytest.fixture(scope="module")
def golden(golden_dir):
    tensors = load_file(golden_dir / "blocks" / "resampler.safetensors")
    meta = json.loads((golden_dir / "blocks" / "resampler.json").read_text())
    weights = {key: tensors[key] for key in meta["weights"]["keys"]}
    return tensors, meta, weights


def _golden_case(tensors, case):
    """Unpack the padded official input [B, L, 48] into our packed layout."""
    sizes = case["tgt_sizes"]
    x = torch.cat([tensors[case["x_key"]][i, :h * w] for i, (h, w) in enumerate(sizes)])
    groups = case["temporal_ids"] or [[-1]] * len(sizes)  # None: every slice is its own group
    temporal_ids = torch.tensor([t for group in groups for t in group])
    return x, torch.tensor(sizes), temporal_ids, torch.tensor([len(group) for group in groups])


def _golden_model(meta, weights, **kwargs) -> PerceiverResampler:
    ctor = meta["constructor"]
    model = resampler3d(ctor["num_queries"], ctor["embed_dim"], ctor["kv_dim"], ctor["num_heads"], **kwargs)
    model.load_state_dict(weights, strict=True)
    return model


def test_sincos_tables_equal_the_official_buffers(golden):
    tensors, _, _ = golden
    torch.testing.assert_close(sincos_2d(12, 12, 128), tensors["aux_pos_embed_h12_w12"], atol=1e-6, rtol=0)
    torch.testing.assert_close(temporal_sincos(torch.arange(32), 128), tensors["aux_temporal_pos_embed_0_32"],
                               atol=1e-6, rtol=0)


def test_sincos_first_half_encodes_the_column():
    table = sincos_2d(3, 5, 16)
    assert torch.equal(table[0, :, :8], table[2, :, :8])  # column half: same for every row
    assert torch.equal(table[:, 0, 8:], table[:, 4, 8:])  # row half: same for every column
    assert torch.equal(table[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


def test_packed_sincos_concatenates_the_per_slice_tables():
    sizes = torch.tensor([[3, 5], [1, 1], [4, 2]])
    expected = torch.cat([sincos_2d(h, w, 16).reshape(h * w, 16) for h, w in sizes.tolist()])
    assert torch.equal(packed_sincos_2d(sizes, 16), expected)


def test_temporal_sincos_is_zero_for_images_and_rejects_bad_ids():
    embedding = temporal_sincos(torch.tensor([-1, 0, 3]), 8)
    assert torch.equal(embedding[0], torch.zeros(8))
    assert torch.equal(embedding[1], torch.tensor([0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match="temporal ids"):
        temporal_sincos(torch.tensor([-2]), 8)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("case_index", range(4))
def test_golden_parity_with_official_batch_path(golden, case_index, backend):
    tensors, meta, weights = golden
    case = meta["cases"][case_index]
    model = _golden_model(meta, weights, attn_backend=backend)
    inputs = _golden_case(tensors, case)
    expected = tensors[case["out_batch_key"]]
    with torch.no_grad():
        packed = model(*inputs).view(-1, 64, 128)
        padded = model.forward_padded(*inputs).view(-1, 64, 128)
    assert packed.shape == expected.shape
    assert (packed - expected).abs().max() <= GOLDEN_TOLERANCE
    assert (padded - expected).abs().max() <= GOLDEN_TOLERANCE


def test_golden_parity_on_the_vision_towers_output(golden, golden_dir):
    """vision.safetensors chains the same resampler weights after the official vision tower."""
    _, meta, weights = golden
    vision = load_file(golden_dir / "blocks" / "vision.safetensors")
    sizes = vision["tgt_sizes"].long()
    x = torch.cat([vision["last_hidden_state"][i, :h * w] for i, (h, w) in enumerate(sizes.tolist())])
    with torch.no_grad():
        out = _golden_model(meta, weights)(x, sizes, torch.full((3,), -1), torch.ones(3, dtype=torch.long))
    assert (out.view(3, 64, 128) - vision["chain_resampler_out"]).abs().max() <= GOLDEN_TOLERANCE


def test_we_do_not_reproduce_the_official_foreach_mask_bug(golden):
    tensors, meta, weights = golden
    case = meta["cases"][2]  # a two-frame group whose frames carry padding in the official input
    with torch.no_grad():
        out = _golden_model(meta, weights)(*_golden_case(tensors, case)).view(-1, 64, 128)
    assert (out[2] - tensors[case["out_foreach_key"]][2]).abs().max() > 0.1
    assert (out[2] - tensors[case["out_batch_key"]][2]).abs().max() <= GOLDEN_TOLERANCE


def test_state_dict_has_exactly_the_official_keys_and_no_buffers(golden):
    _, _, weights = golden
    model = resampler3d(64, 128, 48, 2)
    assert set(model.state_dict()) == OFFICIAL_KEYS == set(weights)
    assert list(model.buffers()) == []


def test_built_on_meta_then_materialized_and_loaded(golden):
    tensors, meta, weights = golden
    ctor = meta["constructor"]
    with torch.device("meta"):
        model = resampler3d(ctor["num_queries"], ctor["embed_dim"], ctor["kv_dim"], ctor["num_heads"])
    model = model.to_empty(device="cpu")
    model.load_state_dict(weights, strict=True)
    case = meta["cases"][1]  # video: needs both the 2-D and the temporal tables
    with torch.no_grad():
        out = model(*_golden_case(tensors, case)).view(-1, 64, 128)
    assert (out - tensors[case["out_batch_key"]]).abs().max() <= GOLDEN_TOLERANCE


def test_mcpv45_preset_size():
    with torch.device("meta"):
        model = resampler3d_mcpv45()
    assert sum(p.numel() for p in model.parameters()) == 88_907_776
    assert (model.num_queries, model.out_dim, model.num_heads, model.kv_proj.in_features) == (64, 4096, 32, 1152)


@pytest.mark.parametrize("build", [resampler3d_tiny, resampler2d_tiny])
def test_packed_equals_padded_reference(build):
    model = build(attn_backend="sdpa")
    inputs = _mixed_batch()
    torch.testing.assert_close(model(*inputs), model.forward_padded(*inputs), atol=1e-5, rtol=1e-5)


def test_3d_vs_2d_token_counts():
    inputs = _mixed_batch()
    sizes = [tuple(s) for s in MIXED["tgt_sizes"]]
    groups = [sizes[0:1], sizes[1:2], sizes[2:5], sizes[5:6]]
    for model, expected_rows in [(resampler3d_tiny(), 4 * 16), (resampler2d_tiny(), 6 * 16)]:
        out = model(*inputs)
        assert out.shape == (expected_rows, 64)
        assert sum(model.tokens_per_group(group) for group in groups) == expected_rows
    assert resampler3d_tiny().tokens_per_group([(2, 4)] * 3) == 16
    assert resampler2d_tiny().tokens_per_group([(2, 4)] * 3) == 48


@pytest.mark.parametrize("temporal", [True, False])
def test_positions_in_values_put_the_place_into_the_output(temporal):
    """Over patches that all look the same, official values are identical, so every query returns the
    same token; with positions in the values, the queries' tokens differ by where they looked."""
    official = PerceiverResampler(16, 64, 64, 2, temporal=temporal, attn_backend="sdpa")
    placed = PerceiverResampler(16, 64, 64, 2, temporal=temporal, attn_backend="sdpa", positions_in_values=True)
    placed.load_state_dict(official.state_dict())
    x = torch.randn(1, 64).expand(8 * 8, 64)
    inputs = (x, torch.tensor([[8, 8]]), torch.tensor([-1]), torch.tensor([1]))
    same = official(*inputs)
    torch.testing.assert_close(same, same[:1].expand_as(same), atol=1e-5, rtol=1e-5)
    tokens = placed(*inputs)
    distances = torch.cdist(tokens, tokens) + torch.eye(len(tokens)) * 1e9
    assert distances.min() > 1e-2  # no two queries return the same token
    varied = _mixed_batch()
    torch.testing.assert_close(placed(*varied), placed.forward_padded(*varied), atol=1e-5, rtol=1e-5)


def _token_changes_per_cell(model: PerceiverResampler, grid: int) -> torch.Tensor:
    """[cells, Q]: how far each output token moves when the patches of one board cell change."""
    side = round(model.num_queries ** 0.5)
    cell = grid // side
    x = torch.randn(grid * grid, 64)
    inputs = (torch.tensor([[grid, grid]]), torch.tensor([-1]), torch.tensor([1]))
    with torch.no_grad():
        base = model(x, *inputs)
        changes = []
        for row in range(side):
            for col in range(side):
                changed = x.view(grid, grid, 64).clone()
                changed[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] += 0.3 * torch.randn(cell, cell, 64)
                changes.append((model(changed.view(-1, 64), *inputs) - base).norm(dim=-1))
    return torch.stack(changes)


@pytest.mark.parametrize(("queries", "width", "heads", "grid"), [(16, 64, 2, 8), (64, 256, 8, 32)])
def test_region_init_makes_each_query_read_its_own_cell(queries, width, heads, grid):
    """Changing the patches of one cell moves that cell's token most; with the official init the
    tokens move together (every query reads the whole slice)."""
    torch.manual_seed(0)
    regional = resampler3d(queries, width, 64, heads, attn_backend="sdpa", region_grid=grid)
    changes = _token_changes_per_cell(regional, grid)
    assert torch.equal(changes.argmax(dim=1), torch.arange(queries))
    others = changes.masked_fill(torch.eye(queries, dtype=torch.bool), 0).sum(dim=1) / (queries - 1)
    assert (changes.diagonal() > 5 * others).all()
    official = _token_changes_per_cell(resampler3d(queries, width, 64, heads, attn_backend="sdpa"), grid)
    assert (official.argmax(dim=1) == torch.arange(queries)).float().mean() < 0.5
    with pytest.raises(ValueError, match="square num_queries"):
        resampler3d(12, 64, 64, 2, region_grid=8)


def test_temporal_ids_and_group_membership_change_only_their_group():
    model = resampler3d_tiny()
    x, tgt_sizes, temporal_ids, group_sizes = _mixed_batch()
    base = model(x, tgt_sizes, temporal_ids, group_sizes).view(-1, 16, 64)
    shifted = model(x, tgt_sizes, temporal_ids + torch.tensor([0, 0, 1, 1, 1, 0]), group_sizes).view(-1, 16, 64)
    assert torch.equal(base[[0, 1, 3]], shifted[[0, 1, 3]])
    assert (base[2] - shifted[2]).abs().max() > 1e-3
    model_2d = resampler2d_tiny()
    torch.testing.assert_close(model_2d(x, tgt_sizes, temporal_ids, group_sizes),
                               model_2d(x, tgt_sizes, temporal_ids + 3, group_sizes))


def test_gradients_reach_every_parameter_and_the_input():
    model = resampler3d(16, 64, 48, 2)  # kv_dim != D so kv_proj is a real Linear
    x, tgt_sizes, temporal_ids, group_sizes = _mixed_batch(width=48)
    x.requires_grad_(True)
    model(x, tgt_sizes, temporal_ids, group_sizes).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert x.grad.abs().sum(1).min() > 0  # every patch, including the 1x1 frame, is attended to


def test_official_init_statistics():
    model = resampler3d(64, 256, 128, 2)
    # trunc_normal_(std=0.02) with torch's default bounds (+-2, absolute): effectively a plain normal, as official.
    assert abs(model.query.std().item() - 0.02) < 0.002
    assert abs(model.kv_proj.weight.std().item() - 0.02) < 0.002
    assert abs(model.attn.out_proj.weight.std().item() - 0.02) < 0.002
    assert abs(model.proj.std().item() - 256 ** -0.5) < 0.005
    assert torch.equal(model.ln_post.weight, torch.ones(256)) and torch.equal(model.attn.in_proj_bias, torch.zeros(768))
    xavier_bound = (6 / (256 + 768)) ** 0.5  # nn.MultiheadAttention's own in_proj init
    assert model.attn.in_proj_weight.abs().max() <= xavier_bound


def test_bad_packed_input_raises_value_error():
    model = resampler3d_tiny()
    x, tgt_sizes, temporal_ids, group_sizes = _mixed_batch()
    with pytest.raises(ValueError, match="tgt_sizes describe"):
        model(x[:-1], tgt_sizes, temporal_ids, group_sizes)
    with pytest.raises(ValueError, match="group_sizes"):
        model(x, tgt_sizes, temporal_ids, torch.tensor([1, 1, 3]))
    with pytest.raises(ValueError, match="temporal_ids"):
        model(x, tgt_sizes, temporal_ids[:-1], group_sizes)


def test_empty_visual_input_gives_no_tokens():
    model = resampler3d_tiny()
    out = model(torch.zeros(0, 64), torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 64)
