import pytest
import torch

from blocks.batch import IGNORE_INDEX, Sample, collate, empty_visual


def _sample(n_tokens: int, slices: list[tuple[int, int]], groups: list[int], bounds: list[tuple[int, int]],
            sample_id: str = "s") -> Sample:
    n_patches = sum(h * w for h, w in slices)
    return Sample(
        input_ids=torch.arange(1, n_tokens + 1),
        labels=torch.arange(1, n_tokens + 1),
        patches=torch.randn(n_patches, 588),
        tgt_sizes=torch.tensor(slices, dtype=torch.long).reshape(-1, 2),
        temporal_ids=torch.full((len(slices),), -1),
        group_sizes=torch.tensor(groups, dtype=torch.long),
        image_bound=torch.tensor(bounds, dtype=torch.long).reshape(-1, 2),
        sample_id=sample_id,
    )


def test_collate_packs_visuals_and_shifts_bounds_for_left_padding():
    a = _sample(10, [(2, 3)], [1], [(2, 6)], "a")
    b = _sample(6, [(1, 1), (2, 2)], [2], [(1, 5)], "b")
    batch = collate([a, b], pad_id=7, padding_side="left")

    assert batch.input_ids.shape == (2, 10)
    assert batch.input_ids[1, :4].tolist() == [7, 7, 7, 7]
    assert batch.attention_mask.sum(1).tolist() == [10, 6]
    assert (batch.labels[1, :4] == IGNORE_INDEX).all()
    assert batch.patches.shape == (6 + 1 + 4, 588)
    assert batch.tgt_sizes.tolist() == [[2, 3], [1, 1], [2, 2]]
    assert batch.group_sizes.tolist() == [1, 2]
    # b was left-padded by 4, so its span moves by 4 and keeps pointing at the same tokens.
    assert batch.image_bound.tolist() == [[0, 2, 6], [1, 5, 9]]
    assert batch.input_ids[1, 5:9].tolist() == b.input_ids[1:5].tolist()


def test_collate_right_padding_and_multiple_of():
    batch = collate([_sample(5, [], [], []), _sample(3, [], [], [])], pad_id=0, pad_to_multiple_of=8)
    assert batch.input_ids.shape == (2, 8)
    assert batch.attention_mask[1].tolist() == [True] * 3 + [False] * 5
    assert batch.image_bound.shape == (0, 3)
    assert batch.num_groups == 0


def test_padding_is_found_by_position_not_token_id():
    # Token id 0 is "!" in the official vocabulary; a real 0 must stay unmasked.
    sample = Sample(input_ids=torch.tensor([5, 0, 6]), labels=torch.tensor([5, 0, 6]), image_bound=torch.zeros(0, 2),
                    **empty_visual())
    batch = collate([sample, _sample(5, [], [], [])], pad_id=0)
    assert batch.attention_mask[0].tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("bad", ["patches", "group_sizes", "image_bound", "labels"])
def test_inconsistent_sample_names_the_sample(bad):
    fields = dict(input_ids=torch.arange(4), labels=torch.arange(4), patches=torch.zeros(6, 588),
                  tgt_sizes=torch.tensor([[2, 3]]), temporal_ids=torch.tensor([-1]), group_sizes=torch.tensor([1]),
                  image_bound=torch.tensor([[0, 2]]), sample_id="doc-17")
    fields[bad] = {"patches": torch.zeros(5, 588), "group_sizes": torch.tensor([2]),
                   "image_bound": torch.zeros(0, 2), "labels": torch.arange(3)}[bad]
    with pytest.raises(ValueError, match="doc-17"):
        Sample(**fields)


def test_to_moves_and_casts_only_float_tensors():
    batch = collate([_sample(4, [(1, 2)], [1], [(0, 2)])], pad_id=0).to("cpu", dtype=torch.float64)
    assert batch.patches.dtype == torch.float64
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.bool
