"""Parameter counts and training-memory estimates per stage, computed on a meta-device model.

Memory model (per GPU, bytes; activations and temporary buffers are not included):

- weights: every parameter, 2 B under ``bf16-*`` precisions, 4 B under ``32-true``;
- gradients: trainable parameters only, in the weight dtype;
- optimizer: AdamW's two moments in fp32 (8 B) per trainable parameter, plus a 4 B fp32 master copy
  under ``bf16-mixed`` (weights are computed in bf16 but updated in fp32);
- FSDP full-shard over N GPUs divides all three by N;
- activations (``activation_bytes``): the tensors autograd keeps for backward, per LLM token and per
  vision patch of a micro-batch, counted from the layers' structure (docs/benchmarks.md, "Training
  memory": a saved-tensor probe and a ~200M-parameter run on this CPU check it);
- a step's peak: weights + gradients + optimizer state + activations (the ~230M run measures 0.95 of it).

A stage trains whole blocks (``trainable``), optionally LoRA adapters on the LLM, and the head its
objective adds for the stage (stage0's text tower), which is trainable and dropped afterwards.

RL stages (GRPO, DPO) hold no reference model and no head: the policy is the only model (DPO's
reference log-probs are numbers computed before training). They add the KV cache of their rollouts:
2 (keys, values) x layers x KV heads x head dim x weight bytes per token, for the rows generated at
once (prompts per engine call x samples) at prompt + new tokens each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from torch import nn

from assemblies.contrastive import OBJECTIVE_HEADS
from assemblies.mllm import SLOTS, MiniCPMV
from assemblies.presets import build_model
from assemblies.training.config import instantiate, pipeline_stages

GIB, MIB = 1024 ** 3, 1024 ** 2
WEIGHT_BYTES = {"bf16-mixed": 2, "bf16-true": 2, "32-true": 4}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Stage:
    """What a training stage trains: whole blocks, optionally LoRA adapters on the LLM, and an objective head."""

    name: str
    trainable: list[str]
    lora: dict = field(default_factory=dict)
    head_params: int = 0      # parameters of the objective's head (always trainable)
    rollout_tokens: int = 0   # RL: tokens whose KV cache sampling holds at once (rows x sequence length)


def lora_params(llm: nn.Module, r: int, target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> int:
    """Adapter parameters r * (in + out) of every linear layer of ``llm`` named in ``target_modules``."""
    return sum(r * (m.in_features + m.out_features) for name, m in llm.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in target_modules)


def stage_memory(model: MiniCPMV, stage: Stage, precision: str, gpus: list[int]) -> dict:
    """Trainable parameters and memory (bytes) of ``stage``: total and per GPU for each FSDP size."""
    if precision not in WEIGHT_BYTES:
        raise ValueError(f"precision {precision!r} not modelled; choose one of {sorted(WEIGHT_BYTES)}")
    counts = model.num_params()
    adapters = lora_params(model.llm, int(stage.lora.get("r", 64)),
                           tuple(stage.lora.get("target_modules", DEFAULT_LORA_TARGETS))) if stage.lora else 0
    trainable = sum(counts[slot] for slot in stage.trainable if slot in SLOTS) + adapters + stage.head_params
    width = WEIGHT_BYTES[precision]
    weights = (counts["total"] + adapters + stage.head_params) * width
    grads = trainable * width
    optimizer = trainable * (8 + (4 if precision == "bf16-mixed" else 0))
    kv_cache = stage.rollout_tokens * kv_bytes_per_token(model.llm, width)
    total = weights + grads + optimizer
    # Sharding splits the parameters' three terms; each GPU samples its own rows, so the cache stays whole.
    return {"name": stage.name, "trainable_blocks": stage.trainable, "lora_params": adapters,
            "trainable_params": trainable, "weights": weights, "grads": grads, "optimizer": optimizer,
            "rollout_kv_cache": kv_cache, "total": total + kv_cache,
            "per_gpu": {n: total / n + kv_cache for n in gpus}}


def kv_bytes_per_token(llm: nn.Module, width: int) -> int:
    """Bytes of keys and values one token adds to the LLM's KV cache."""
    config = llm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * width


def rollout_tokens(objective: object, stage: DictConfig) -> int:
    """Tokens an RL stage's sampling holds in its KV cache at once (0 for other objectives)."""
    from assemblies.training.dpo import DpoObjective
    from assemblies.training.grpo import GrpoObjective

    if isinstance(objective, GrpoObjective):
        prompts = min(objective.chunk_prompts or int(stage.batch_size), int(stage.batch_size))
        return prompts * objective.samples_per_prompt * (int(stage.max_length) + max(objective.max_new_tokens.values()))
    if isinstance(objective, DpoObjective):
        prompts = min(objective.prompts, objective.chunk_prompts)
        return prompts * objective.samples_per_prompt * (int(stage.max_length) + objective.max_new_tokens)
    return 0


def activation_bytes(model: MiniCPMV, tokens: int, patches: int, precision: str = "32-true",
                     grad_checkpointing: bool = False) -> dict[str, int]:
    """Bytes of the activations one micro-batch keeps for backward: ``tokens`` LLM positions (padded) and
    ``patches`` vision patches, in the compute dtype.

    Per LLM decoder layer and token (Qwen3, SDPA): the two RMSNorms' input, normalised and scaled outputs
    (6h), q/k norms, RoPE and attention outputs (4q + 4kv), the MLP's gate, up, activation and product
    (4m); per vision layer and patch (SigLIP): LayerNorms (4w), q/k/v and attention output (4w), the
    MLP's two m-wide tensors; the LM head's logits and log-softmax (2 x vocab per token); the resampler
    about 10 x its width per patch. With gradient checkpointing a layer keeps its input only, and one
    layer's full set exists again while it is recomputed.
    """
    width = WEIGHT_BYTES.get(precision, 4)
    config = model.llm.config
    hidden, heads, head_dim = config.hidden_size, config.num_attention_heads, config.head_dim
    q, kv = heads * head_dim, config.num_key_value_heads * head_dim
    llm_layer = 6 * hidden + 4 * q + 4 * kv + 4 * config.intermediate_size + 2 * head_dim + 3 * heads
    llm_layers = config.num_hidden_layers
    vision_layer, vision_layers, vision_width = 0, 0, 0
    if hasattr(model.vpm, "encoder"):  # navit_siglip; other towers are not modelled (counted as 0)
        layers = model.vpm.encoder.layers
        vision_width, vision_layers = model.vpm.width, len(layers)
        vision_layer = 8 * vision_width + 2 * layers[0].mlp.fc1.out_features + 8
    if grad_checkpointing:
        llm = tokens * (llm_layers * hidden + llm_layer)
        vision = patches * (vision_layers * vision_width + vision_layer)
    else:
        llm = tokens * llm_layers * llm_layer
        vision = patches * vision_layers * vision_layer
    head = tokens * (3 * hidden + 2 * config.vocab_size)
    resampler = patches * 10 * model.resampler.out_dim
    parts = {"llm": llm * width, "lm_head": head * width, "vision": vision * width, "resampler": resampler * width}
    return {**parts, "total": sum(parts.values())}


def objective_head_params(model: MiniCPMV, objective: DictConfig, vocab_size: int) -> int:
    """Parameters an objective wrapper (e.g. ``ContrastivePretrainer``) adds next to the assembly, built on meta."""
    wrapper = instantiate(objective, _convert_="all")(model=model, vocab_size=vocab_size)
    return sum(p.numel() for name in OBJECTIVE_HEADS if hasattr(wrapper, name)
               for p in getattr(wrapper, name).parameters())


def describe_model(cfg: DictConfig) -> dict:
    """Build ``cfg.model`` on meta; report parameters per block and memory per stage of ``cfg.pipeline``.

    ``cfg`` is a training config (conf/train.yaml) plus ``precision`` and ``gpus``. A stage with an
    ``objective`` builds its head with the tokenizer's vocabulary, so the tokenizer is loaded then.
    """
    model = build_model(cfg, device="meta")
    total, trainable = model.num_params(), model.num_params(trainable_only=True)
    stages, vocab_size, tokens = [], None, []
    for node in pipeline_stages(cfg):
        # LLM positions of one micro-batch: the stage's token budget, else batch_size x max_length.
        tokens.append((int(node.max_tokens or int(node.batch_size) * int(node.max_length)),
                       bool(node.get("grad_checkpointing"))))
        head, rollout = 0, 0
        if node.objective is not None and node.objective.get("_partial_", False):  # a wrapper with a head
            vocab_size = vocab_size or len(instantiate(cfg.data.tokenizer))
            head = objective_head_params(model, node.objective, vocab_size)
        elif node.objective is not None:  # RL: no head, no reference model; rollouts hold a KV cache
            rollout = rollout_tokens(instantiate(node.objective, _convert_="all"), node)
        lora = OmegaConf.to_container(node.lora, resolve=True) if node.lora else {}
        stages.append(Stage(str(node.name), list(node.trainable), lora, head, rollout))
    gpus = [int(n) for n in cfg.gpus]
    rows = []
    for stage, (count, checkpointing) in zip(stages, tokens):
        row = stage_memory(model, stage, cfg.precision, gpus)
        acts = activation_bytes(model, count, 0, cfg.precision, checkpointing)
        rows.append({**row, "tokens": count, "activations": acts["llm"] + acts["lm_head"]})
    per_patch = activation_bytes(model, 0, 1000, cfg.precision)["total"]
    return {"params": {k: {"total": total[k], "trainable": trainable[k]} for k in total},
            "precision": cfg.precision, "gpus": gpus, "stages": rows, "activations_per_1000_patches": per_patch}


def format_report(report: dict) -> str:
    """The two tables ``tasks/describe.py`` prints: parameters per block, memory per stage in pipeline order."""
    lines = [f"{'block':<12}{'params':>16}{'trainable':>16}"]
    lines += [f"{name:<12}{row['total']:>16,}{row['trainable']:>16,}" for name, row in report["params"].items()]
    biggest = max((s["total"] for s in report["stages"]), default=0)
    unit, scale = ("GiB", GIB) if biggest >= GIB else ("MiB", MIB)  # tiny models read in MiB
    master = " + fp32 master" if report["precision"] == "bf16-mixed" else ""
    lines += ["", f"training memory, {report['precision']}, FSDP full-shard, {unit} (weights + grads + AdamW{master}"
                  " + the RL stages' rollout KV cache, no reference model; 'acts': LLM activations of one"
                  " micro-batch per GPU, not sharded)",
              f"{'stage':<24}{'trainable':<32}{'params':>16}{'weights':>10}{'grads':>9}{'optim':>9}{'KV':>9}{'total':>9}"
              + "".join(f"{f'/GPU N={n}':>12}" for n in report["gpus"]) + f"{'tokens':>8}{'acts':>9}"]
    for s in report["stages"]:
        blocks = "+".join(s["trainable_blocks"]) + ("+lora" if s["lora_params"] else "")
        lines.append(f"{s['name']:<24}{blocks:<32}{s['trainable_params']:>16,}{s['weights'] / scale:>10.1f}"
                     f"{s['grads'] / scale:>9.1f}{s['optimizer'] / scale:>9.1f}{s['rollout_kv_cache'] / scale:>9.1f}"
                     f"{s['total'] / scale:>9.1f}"
                     + "".join(f"{s['per_gpu'][n] / scale:>12.1f}" for n in report["gpus"])
                     + f"{s['tokens']:>8}{s['activations'] / scale:>9.1f}")
    lines.append(f"the vision tower and resampler add {report['activations_per_1000_patches'] / MIB:,.0f} MiB of "
                 "activations per 1,000 patches (a 448 x 448 slice has 1,024);\na step's peak per GPU is about "
                 "total/GPU + acts + the vision activations (docs/benchmarks.md, 'Training memory')")
    return "\n".join(lines)
