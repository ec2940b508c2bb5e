"""Models too large for one process: built on the meta device, materialised one FSDP unit at a time.

Under FSDP (``trainer=fsdp``, ``trainer=fsdp_cpu``) no rank ever holds the whole model. The assembly is
built with its parameters on the meta device (``parameters_on_meta``: buffers such as the rotary
frequencies are computed for real), the stage freezes it, and ``MLLMModule.configure_model`` wraps it
with FSDP, whose ``param_init_fn`` is a ``UnitMaterializer``: for each unit (a vision layer, the
resampler, an LLM decoder layer, then the rest) it allocates that unit's tensors, initialises them with
the owning block's own init, copies the stage's ``init_from`` tensors that cover them (read one tensor
at a time from the safetensors files), and FSDP then keeps this rank's shard and frees the rest. A
rank's peak is its shard of the model plus about twice the largest unit (docs/benchmarks.md).

The init of a module is seeded by ``(seed, its qualified name)``, so it does not depend on the order
in which FSDP reaches the units nor on the number of ranks: ``materialize`` (one process, no FSDP)
gives the same tensors bit for bit. Who initialises what: a module inside a transformers model by that
model's ``_init_weights`` (its own tensors); any other module by its ``reset_parameters()``, which
covers its whole subtree (``SiglipEncoderLayer``, ``SiglipNaViTEmbeddings``, ``PerceiverResampler``
with its region init, torch's layers).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import PreTrainedModel

TensorIndex = Mapping[str, tuple[Path, str]]  # model key -> (safetensors file, key inside it)


def module_seed(seed: int, name: str) -> int:
    """The RNG seed of module ``name``'s init: stable across runs, processes and Python versions."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") % 2**63


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _has_meta(module: nn.Module, recurse: bool = True) -> bool:
    return any(t.is_meta for t in (*module.parameters(recurse=recurse), *module.buffers(recurse=recurse)))


class UnitMaterializer:
    """FSDP ``param_init_fn``: gives a module's meta tensors memory on ``device``, their init and their weights.

    Args:
        model: the assembly as built (on meta), before wrapping; names are relative to it.
        seed: the run's seed (each module's init draws from ``module_seed(seed, name)``).
        device: where tensors are allocated (the rank's device).
        weights: model key -> where its tensor is (``assemblies.training.weights.tensor_index``), loaded
            over the init; None: init only.

    Raises (from the FSDP constructor): TypeError for a module that has parameters but no init;
    KeyError for a weight whose shape differs from the model's.

    ``peak_bytes``: the most parameter memory it had allocated and not yet handed over to shards, measured
    after each unit (the distinct storages behind the tensors it created: FSDP moves a unit's tensors into
    its flat shard and frees their own storage). Under FSDP it stays near the largest unit plus this
    rank's shards, far below the whole model.
    """

    def __init__(self, model: nn.Module, seed: int, device: torch.device | str = "cpu",
                 weights: TensorIndex | None = None) -> None:
        self.seed, self.device, self.weights = seed, torch.device(device), dict(weights or {})
        self.names = {id(m): name for name, m in model.named_modules()}
        self.hf_owner = {id(m): owner for owner in model.modules() if isinstance(owner, PreTrainedModel)
                         for m in owner.modules()}
        self.loaded: set[str] = set()
        # meta parameter -> its materialised one, for weights tied across modules. Weak: once FSDP owns a
        # unit's tensors, whether they live is its decision, not the materialiser's.
        self._replaced: weakref.WeakValueDictionary[int, nn.Parameter] = weakref.WeakValueDictionary()
        self._created: list[weakref.ref] = []
        self.peak_bytes = 0
        self._files: dict[Path, object] = {}

    def __call__(self, module: nn.Module) -> None:
        if not _has_meta(module):
            return
        name = self.names[id(module)]
        owner = self.hf_owner.get(id(module))
        if owner is not None:  # transformers initialises module by module
            self._allocate(module, recurse=False)
            with _seeded(module_seed(self.seed, name), self.device):
                owner._init_weights(module)
            self._load(module, name, recurse=False)
            self._measure()
        elif callable(getattr(module, "reset_parameters", None)):
            if any(not p.is_meta for p in module.parameters()):
                raise TypeError(f"{name} ({type(module).__name__}) is partly materialised: its reset_parameters "
                                "covers its whole subtree, so it must not contain a separate FSDP unit")
            self._allocate(module, recurse=True)
            with _seeded(module_seed(self.seed, name), self.device):
                module.reset_parameters()
            self._load(module, name, recurse=True)
            self._measure()
        elif any(p.is_meta for p in module.parameters(recurse=False)):
            raise TypeError(f"{name or 'the model'} ({type(module).__name__}) holds parameters but has no "
                            "reset_parameters(): it cannot be materialised from the meta device")

    def unused_weights(self) -> list[str]:
        """Keys of ``weights`` that no module took (after every unit is materialised): the model lacks them."""
        return sorted(set(self.weights) - self.loaded)

    def live_bytes(self) -> int:
        """Bytes of the distinct storages behind the parameters this materialiser created that still exist."""
        storages = {}
        for ref in self._created:
            param = ref()
            if param is not None:
                storage = param.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def _measure(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.live_bytes())

    def _allocate(self, module: nn.Module, recurse: bool) -> None:
        for sub in module.modules() if recurse else [module]:
            for key, param in sub._parameters.items():
                if param is not None and param.is_meta:
                    created = self._replaced.get(id(param))
                    if created is None:
                        created = nn.Parameter(torch.empty_like(param, device=self.device),
                                               requires_grad=param.requires_grad)
                        self._replaced[id(param)] = created
                        self._created.append(weakref.ref(created))
                    sub._parameters[key] = created
            for key, buffer in sub._buffers.items():
                if buffer is not None and buffer.is_meta:
                    raise TypeError(f"buffer {self.names[id(sub)]}.{key} is on the meta device: build with "
                                    "parameters_on_meta(), which computes buffers for real")

    @torch.no_grad()
    def _load(self, module: nn.Module, name: str, recurse: bool) -> None:
        prefix = f"{name}." if name else ""
        for key, param in module.named_parameters(recurse=recurse):
            if prefix + key in self.weights:
                param.copy_(self._tensor(prefix + key, param))
                self.loaded.add(prefix + key)

    def _tensor(self, key: str, param: Tensor) -> Tensor:
        file, stored = self.weights[key]
        if file not in self._files:
            self._files[file] = safe_open(str(file), framework="pt")
        tensor = self._files[file].get_tensor(stored)
        if tensor.shape != param.shape:
            raise KeyError(f"{file.name}: {stored!r} has shape {tuple(tensor.shape)}, model expects "
                           f"{tuple(param.shape)} ({key})")
        return tensor


def materialize(model: nn.Module, seed: int, device: torch.device | str = "cpu",
                weights: TensorIndex | None = None) -> nn.Module:
    """The whole model materialised in this process exactly as ``UnitMaterializer`` does it per FSDP unit.

    Raises:
        KeyError: ``weights`` holds keys the model lacks.
    """
    init = UnitMaterializer(model, seed, device, weights)
    for module in list(model.modules()):  # parents first: an owner's init covers its children
        init(module)
    check_all_used(init)
    return model


def check_all_used(init: UnitMaterializer) -> None:
    """Raise KeyError when the init_from source held tensors the model does not have (strict loading)."""
    unused = init.unused_weights()
    if unused:
        raise KeyError(f"init_from weights do not fit the model: {len(unused)} keys it lacks, e.g. {unused[:8]}")


def shard(model: nn.Module, init: UnitMaterializer, device: torch.device, **options) -> nn.Module:
    """``model`` (on meta) wrapped by FSDP, each unit materialised by ``init`` on ``device``; ``options`` are
    further ``FullyShardedDataParallel`` arguments (``auto_wrap_policy``, ``use_orig_params``, ...)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapped = FullyShardedDataParallel(model, device_id=device, param_init_fn=init, **options)
    check_all_used(init)
    return wrapped


def embedding_units(model: nn.Module) -> list[nn.Module]:
    """The embedding tables, each an FSDP unit of its own: the vision position table (4,900 rows) and the
    LLM's token embedding and output head (151,748 rows each at full size, 1.2B parameters together) would
    otherwise sit in the root unit, which every rank materialises whole before sharding it."""
    llm = model.llm
    units = [model.vpm.embeddings] if hasattr(model.vpm, "embeddings") else []
    units.append(llm.get_input_embeddings())
    head = llm.get_output_embeddings()
    if head is not None and head.weight is not llm.get_input_embeddings().weight:  # tied: one unit holds both
        units.append(head)
    return units


def fsdp_options(strategy, model: nn.Module) -> dict:
    """The FSDP arguments of a Lightning ``FSDPStrategy`` for ``model``, for ``shard``: units are the
    strategy's ``unit_classes`` (``MetaFSDPStrategy``) and ``embedding_units(model)``.

    The model is wrapped in ``configure_model`` (not by the strategy) so that FSDP gets ``param_init_fn``
    and ``device_id=root_device``: Lightning passes the device *index*, None on CPU, and FSDP then
    refuses to run on CPU. Lightning sees the wrapped units and only adds activation checkpointing.
    """
    from torch.distributed.fsdp.wrap import CustomPolicy

    classes = tuple(getattr(strategy, "unit_classes", ()))
    tables = {id(m) for m in embedding_units(model)}
    options = dict(strategy.kwargs, cpu_offload=strategy.cpu_offload, sharding_strategy=strategy.sharding_strategy,
                   mixed_precision=strategy.mixed_precision_config,
                   auto_wrap_policy=CustomPolicy(lambda m: isinstance(m, classes) or id(m) in tables))
    strategy.kwargs.pop("auto_wrap_policy", None)  # applied by shard(); Lightning would warn that it ignores it
    return options


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Every tensor of an FSDP-wrapped ``module`` under its unwrapped names, gathered unit by unit onto
    rank 0's CPU (other ranks get {}). A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
