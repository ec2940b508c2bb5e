"""Scale-out strategies whose policies need Python objects (layer classes), built after the model.

Wrap and activation-checkpoint policies are sets of module classes, which YAML cannot express;
the trainer config names the factory (``_partial_``) and ``pipeline`` completes it with the
assembly's ``layer_classes`` (vision encoder layer, resampler, LLM decoder layer).
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy


class MetaFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` for models built on meta and wrapped by ``MLLMModule.configure_model``
    (``assemblies.training.sharding``), which also makes it run on CPU processes over gloo.

    Lightning 2.6 refuses a CPU accelerator for exactly ``FSDPStrategy`` (a type check that predates
    torch's CPU support) and would hand FSDP the device *index*, None on CPU; the wrapping in
    ``configure_model`` passes the device itself. ``unit_classes``: the module classes each made an FSDP
    unit (``sharding.fsdp_options`` adds the embedding tables as units of their own).
    """

    def __init__(self, unit_classes: tuple[type, ...], activation_checkpointing: bool, **kwargs) -> None:
        classes = set(unit_classes)
        super().__init__(auto_wrap_policy=classes, activation_checkpointing_policy=classes if activation_checkpointing
                         else None, **kwargs)
        self.unit_classes = tuple(unit_classes)


def fsdp(layer_classes: tuple[type, ...], activation_checkpointing: bool = True,
         sharding_strategy: str = "FULL_SHARD", state_dict_type: str = "full", cpu_offload: bool = False,
         process_group_backend: str | None = None) -> MetaFSDPStrategy:
    """FSDP wrapping each repeated layer as a unit (and checkpointing its activations when asked).

    ``use_orig_params`` stays on (Lightning's default): frozen and trainable parameters share a unit
    when a stage freezes part of a block, and per-block param groups need the original parameters.
    The model is built on meta and wrapped by ``MLLMModule.configure_model`` (``assemblies.training.sharding``).
    """
    return MetaFSDPStrategy(layer_classes, activation_checkpointing, sharding_strategy=sharding_strategy,
                            state_dict_type=state_dict_type,
                            cpu_offload=cpu_offload, process_group_backend=process_group_backend)


def ddp(layer_classes: tuple[type, ...] = (), find_unused_parameters: bool = False,
        process_group_backend: str | None = None) -> DDPStrategy:
    """Plain DDP (``layer_classes`` accepted so every strategy factory has one call form)."""
    return DDPStrategy(find_unused_parameters=find_unused_parameters, process_group_backend=process_group_backend)
