"""Every block has the surface of the slot it fills, and the assembly refuses one that does not."""

from __future__ import annotations

import pytest
from torch import nn

from assemblies.mllm import MiniCPMV
from blocks.llm import qwen3_tiny
from blocks.resampler import mlp_projector_tiny, patch_merger_tiny, resampler2d_tiny, resampler3d_tiny
from blocks.slots import LLMSlot, ResamplerSlot, VisionSlot
from blocks.vision import navit_siglip_tiny, timm_vit_tiny


@pytest.mark.parametrize("build, surface", [
    (navit_siglip_tiny, VisionSlot), (timm_vit_tiny, VisionSlot), (resampler3d_tiny, ResamplerSlot),
    (resampler2d_tiny, ResamplerSlot), (mlp_projector_tiny, ResamplerSlot), (patch_merger_tiny, ResamplerSlot),
    (qwen3_tiny, LLMSlot)])
def test_each_block_has_its_slots_surface_and_no_other(build, surface):
    block = build()
    assert [s.__name__ for s in (VisionSlot, ResamplerSlot, LLMSlot) if isinstance(block, s)] == [surface.__name__]


def test_the_assembly_names_the_slot_whose_module_lacks_its_surface():
    with pytest.raises(TypeError, match="resampler: Linear lacks the ResamplerSlot surface"):
        MiniCPMV(navit_siglip_tiny(), nn.Linear(64, 64), qwen3_tiny())
