"""The assembly learns what it is shown: one small batch, a few dozen steps, exact answers after.

A sample is some filler text, an image and a question; its answer names the image (two tokens fixed
by the image alone, so the batch is learnable only when each group's visual tokens reach its own
placeholders) and then the amount of filler. The answers are then decoded greedily from left-padded
prompts in another order: a model trained on mis-shifted labels learns to copy its input instead, one
fed another sample's image learns a pairing that the new order breaks, and one that attends to the
padding (the filler token) cannot tell a short padded prompt from a long one.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from assemblies.mllm import MiniCPMV
from assemblies.presets import mcpv45_tiny
from blocks.batch import IGNORE_INDEX, MultimodalBatch, Sample, collate

PATCH_DIM, QUERIES = 3 * 14 * 14, 16
IMAGE, IMAGE_END, UNK, FILLER, QUESTION = 10, 11, 12, 13, 14
FILLERS = (1, 9)  # filler tokens before the image; short prompts are padded with the filler token


def sample(image: torch.Tensor, index: int, filler: int, answer: bool = True) -> Sample:
    """``filler`` filler tokens, one 4 x 4-patch image, a question, then the answer (labelled) when asked."""
    prompt = [FILLER] * filler + [IMAGE] + [UNK] * QUERIES + [IMAGE_END, QUESTION]
    target = expected(index, filler) if answer else []
    return Sample(input_ids=torch.tensor(prompt + target), labels=torch.tensor([IGNORE_INDEX] * len(prompt) + target),
                  patches=image, tgt_sizes=torch.tensor([[4, 4]]), temporal_ids=torch.tensor([-1]),
                  group_sizes=torch.tensor([1]), image_bound=torch.tensor([[filler + 1, filler + 1 + QUERIES]]))


def expected(index: int, filler: int) -> list[int]:
    return [100 + index, 200 + index, 300 + filler]


def greedy(model: MiniCPMV, batch: MultimodalBatch, steps: int) -> list[list[int]]:
    """``steps`` argmax tokens after every row of a left-padded ``batch``, one forward pass per token."""
    new = []
    with torch.no_grad():
        for _ in range(steps):
            token = model(batch).logits[:, -1].argmax(-1, keepdim=True)
            new.append(token)
            batch = replace(batch, input_ids=torch.cat([batch.input_ids, token], 1), labels=None,
                            attention_mask=torch.cat([batch.attention_mask, torch.ones_like(token, dtype=torch.bool)], 1))
    return torch.cat(new, 1).tolist()


def test_one_batch_is_learned_and_its_answers_generated_from_the_images(one_thread):
    torch.manual_seed(0)
    model = mcpv45_tiny()
    images = [torch.randn(16, PATCH_DIM) for _ in range(4)]
    pairs = [(index, filler) for index in range(4) for filler in FILLERS]
    batch = collate([sample(images[i], i, filler) for i, filler in pairs], pad_id=FILLER)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    pairs = pairs[::-1]
    prompts = collate([sample(images[i], i, filler, answer=False) for i, filler in pairs], pad_id=FILLER,
                      padding_side="left")
    assert greedy(model.eval(), prompts, 3) == [expected(i, filler) for i, filler in pairs]
