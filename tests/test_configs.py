"""Every shipped config composes, binds to its targets' signatures, and fails early on mistakes.

Nothing large is built: targets are checked by signature binding (``check_targets``) and the model by
a meta-device build where a test needs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from assemblies.training.config import check_targets, pipeline_stages, recipe_stages, register_schemas

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE = ["+assembly=mcpv45"]
# Groups chosen with `group=option` (in train.yaml's defaults) and groups appended with `+group=option`.
SELECTED = ["vision", "resampler", "llm", "scale", "corruption", "data", "trainer", "optimizer", "logger",
            "callbacks", "paths", "recipe", "page_layout"]
APPENDED = ["experiment", "debug", "sweep"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _compose(overrides: list[str], name: str = "train", hydra: bool = False):
    return compose(name, overrides=overrides, return_hydra_config=hydra)


CASES = ([f"{g}={o}" for g in SELECTED for o in _options(g)] + [f"+{g}={o}" for g in APPENDED for o in _options(g)]
         + [f"hydra/launcher={o}" for o in _options("hydra/launcher")])


@pytest.mark.parametrize("choice", CASES)
def test_every_option_composes_and_binds(choice):
    cfg = _compose([*BASE, "scale=tiny", choice] if not choice.startswith("scale=") else [*BASE, choice],
                   hydra=choice.startswith("hydra/"))
    if choice.startswith("hydra/"):
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        if "tasks_per_node" in launcher:  # SLURM: one task (rank) per device
            assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == cfg.trainer.devices
        return
    assert check_targets(cfg) > 10
    for stage in pipeline_stages(cfg):
        name = stage.name
        assert set(stage.trainable) <= {"vpm", "resampler", "llm", "contrastive"}
        assert set(stage.trainable) <= set(stage.lr), f"{name}: a trainable block has no lr"
        assert set(stage.data.mix) <= set(cfg.data.corpora)


def test_pipeline_runs_the_papers_stages_in_order_and_scale_selects_the_recipe():
    full, tiny = _compose(BASE), _compose([*BASE, "scale=tiny"])
    assert [stage.name for stage in pipeline_stages(full)] == ["stage1", "stage2", "stage3", "sft", "sft_long_cot",
                                                                     "rl_hybrid", "rlaif_dpo"]
    pipeline_stages(tiny)
    assert list(full.stages.stage1.trainable) == ["resampler"]
    assert list(full.stages.stage2.trainable) == ["vpm", "resampler"]
    assert full.stages.stage3.schedule._target_.endswith("schedules.wsd")
    assert full.stages.stage3.lr.llm == 5e-5 and full.stages.stage3.schedule.min_ratio == 0.2  # 5e-5 -> 1e-5
    assert full.dims.llm_hidden == 4096 and tiny.dims.llm_hidden == 64
    assert tiny.stages.stage3.max_steps < full.stages.stage3.max_steps
    assert tiny.data.processor.scale_resolution < full.data.processor.scale_resolution
    assert tiny.data.tokenizer._target_.endswith("tiny_tokenizer")
    # The from-scratch tiny tower gets the contrastive pre-training a SigLIP checkpoint already had.
    assert list(tiny.pipeline.stages) == ["stage0", *full.pipeline.stages]  # RL and DPO included
    assert recipe_stages(tiny) == ["stage0", *full.pipeline.stages]
    assert tiny.stages.stage0.objective._target_.endswith("ContrastivePretrainer")


def test_order_rules_command_line_beats_appended_beats_recipe_beats_groups():
    assert _compose([*BASE, "scale=tiny"]).data.heldout_size == 96            # the recipe beats data/synthetic
    assert _compose([*BASE, "scale=tiny", "+debug=fast"]).data.heldout_size == 8  # +debug beats the recipe
    assert _compose([*BASE, "scale=tiny", "+debug=fast", "data.heldout_size=3"]).data.heldout_size == 3
    assert _compose([*BASE, "resampler=mlp"]).model.resampler._target_.endswith("mlp_projector")


@pytest.mark.parametrize("override, message", [
    ("stages.stage1.max_step=3", "max_step"),            # typo in a stage key
    ("stages.stage1.max_steps=many", "max_steps"),       # wrong type
    ("trainer.max_epoch=3", "max_epoch"),                # typo in a trainer key
    ("data.batchsize=4", "batchsize"),
    ("pipeline.stage=[stage1]", "stage"),
])
def test_schemas_reject_typos_and_types_at_compose_time(override, message):
    with pytest.raises(ConfigCompositionException, match=message):
        _compose([*BASE, "scale=tiny", override])


def test_a_bad_block_argument_fails_binding_before_anything_is_built():
    cfg = _compose([*BASE, "scale=tiny", "+model.resampler.num_querys=4"])
    with pytest.raises(TypeError, match="model.resampler"):
        check_targets(cfg)


def test_describe_is_the_training_config_plus_its_report_options():
    cfg = _compose([*BASE, "scale=tiny"], name="describe")
    assert cfg.model == _compose([*BASE, "scale=tiny"]).model and cfg.precision == "32-true"
    assert _compose(BASE, name="describe").precision == "bf16-mixed"


def test_a_debug_length_names_no_stage_where_the_recipe_lacks_it():
    cfg = _compose([*BASE, "+debug=fast"])  # fast.yaml sets stage0's length; the full recipe has no stage0
    assert [stage.name for stage in pipeline_stages(cfg)] == ["stage1", "stage2", "stage3", "sft", "sft_long_cot",
                                                                     "rl_hybrid", "rlaif_dpo"]
    with pytest.raises(ValueError, match=r"unknown stages \['stage0'\]"):
        pipeline_stages(_compose([*BASE, "pipeline.stages=[stage0]"]))


@pytest.mark.parametrize("scale, font_size", [("full", 10), ("tiny", 14)])
def test_scale_picks_a_page_layout_that_fits(scale, font_size):
    from blocks.data.synthetic.documents import PageLayout

    cfg = _compose([*BASE, f"scale={scale}"])
    layout = PageLayout.from_dict(OmegaConf.to_container(cfg.page_layout, resolve=True))  # validates the fit
    assert layout.font_size == font_size
    assert OmegaConf.to_container(cfg.data.corpora.documents, resolve=True)["layout"] == cfg.page_layout


@pytest.mark.parametrize("override, position_init", [([], "normal"), (["model.vision.position_init=sincos"], "sincos")])
def test_the_tiny_tower_starts_with_siglips_position_table_unless_told_sincos(override, position_init):
    from hydra.utils import instantiate

    cfg = _compose([*BASE, "scale=tiny", *override])
    assert instantiate(cfg.model.vision).position_init == position_init


@pytest.mark.parametrize("scale, resampler, region_grid", [("tiny", "resampler3d", 8), ("tiny", "resampler2d", 8),
                                                           ("full", "resampler3d", None)])
def test_only_the_from_scratch_tiny_resampler_starts_with_region_queries(scale, resampler, region_grid):
    cfg = _compose([*BASE, f"scale={scale}", f"resampler={resampler}"])
    assert cfg.model.resampler.region_grid == region_grid
