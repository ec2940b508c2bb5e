"""RLAIF-V preference data from the policy's own samples, and the held-out contradiction measure.

``sample_preferences``: N responses per prompt from one model with one decoding setup (seeds only
differ), each checked claim by claim (``blocks.rl.claims``; the built-in scenes' ground truth),
pairs from responses whose scores differ (``build_pairs``), and the reference log-probs of every
pair computed once with the same weights, before training: no second model is held.

``contradictions``: greedy descriptions of held-out prompts, checked the same way: the rate of
rejected claims among decided ones, the DPO stage's before/after measure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from assemblies.training.rollouts import pad_completions, policy_logprobs, sample_rollouts
from blocks.answers import parse_completion
from blocks.batch import MultimodalBatch, Sample, collate
from blocks.generation import GenerationConfig
from blocks.data.record import Record
from blocks.rl import ClaimReport, ResponseChecker, build_pairs, contradiction_rate, scene_checker, sequence_logprobs

log = logging.getLogger(__name__)
Checker = Callable[[Record], ResponseChecker]


@dataclass
class Preference:
    """One pair: the prompt's ``record`` index (into the stage's prompt records), chosen / rejected
    completion token ids, their reference log-prob sums and claim scores."""

    record: int
    chosen: list[int]
    rejected: list[int]
    reference_chosen: float = 0.0
    reference_rejected: float = 0.0
    chosen_score: int = 0
    rejected_score: int = 0


@dataclass
class PreferenceSet:
    """The pairs of a DPO stage and how they were made (``stats``: prompts, responses, contradiction
    rate of the sampled responses, skipped prompts, ...)."""

    pairs: list[Preference]
    stats: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"stats": self.stats, "pairs": [asdict(p) for p in self.pairs]}))

    @classmethod
    def load(cls, path: Path) -> "PreferenceSet":
        data = json.loads(path.read_text())
        return cls([Preference(**p) for p in data["pairs"]], data["stats"])


def process_prompts(records: Sequence[Record], process: Callable[[Record], Sample]) -> tuple[list[int], list[Sample]]:
    """(indices of the records the processor accepted, their inference samples); rejections are logged."""
    kept, samples = [], []
    for index, record in enumerate(records):
        try:
            samples.append(process(record))
            kept.append(index)
        except Exception as error:  # noqa: BLE001 -- a bad prompt is a counted skip, not a crash
            log.warning("DPO: skipping prompt %s (%s: %s)", record.id, type(error).__name__, error)
    return kept, samples


def _batches(samples: Sequence[Sample], size: int, pad_id: int):
    for start in range(0, len(samples), size):
        yield start, collate(samples[start:start + size], pad_id, padding_side="left")


def generate_texts(model: nn.Module, samples: Sequence[Sample], config: GenerationConfig, tokenizer,
                   batch_prompts: int = 64):
    """Completions of every sample (``config.num_samples`` each, prompt-major), ``batch_prompts`` prompts
    per engine call; sample rows keep the seeds of a single call."""
    out = []
    for start, batch in _batches(samples, batch_prompts, tokenizer.pad_token_id):
        seed = None if config.seed is None else config.seed + start * config.num_samples
        out += sample_rollouts(model, batch, replace(config, seed=seed), tokenizer)
    return out


def check(record: Record, text: str, mode: str, checker: Checker = scene_checker) -> ClaimReport:
    """The claim report of one response (the reasoning too, in long mode: its claims are claims)."""
    parsed = parse_completion(text, mode)
    return checker(record)(" ".join(p for p in (parsed.reasoning, parsed.answer) if p))


def contradictions(model: nn.Module, records: Sequence[Record], process: Callable[[Record], Sample], tokenizer,
                   config: GenerationConfig, mode: str, checker: Checker = scene_checker,
                   batch_prompts: int = 64) -> dict[str, float | None]:
    """Greedy descriptions of ``records`` checked against their scenes: ``contradiction_rate`` (rejected /
    decided claims; None without any), claims per response (accepted, rejected), responses."""
    kept, samples = process_prompts(records, process)
    completions = generate_texts(model, samples, config, tokenizer, batch_prompts)
    reports = [check(records[kept[c.prompt_index]], c.text, mode, checker) for c in completions]
    n = max(len(reports), 1)
    return {"contradiction_rate": contradiction_rate(reports), "responses": len(reports),
            "accepted_per_response": sum(r.count("accepted") for r in reports) / n,
            "rejected_per_response": sum(r.count("rejected") for r in reports) / n}


@torch.no_grad()
def reference_logprobs(model: nn.Module, samples: Sequence[Sample], pairs: Sequence[Preference], tokenizer,
                       batch_pairs: int = 32) -> None:
    """Fill each pair's reference log-prob sums with ``model`` as it is now (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_pairs):
            chunk = pairs[start:start + batch_pairs]
            batch = collate([samples[p.record] for p in chunk], tokenizer.pad_token_id, padding_side="left")
            sums = pair_logprobs(model, batch, chunk, tokenizer.pad_token_id)[0]
            for pair, (c, r) in zip(chunk, sums.view(-1, 2).tolist()):
                pair.reference_chosen, pair.reference_rejected = c, r
    finally:
        model.train(was_training)


def pair_logprobs(model: nn.Module, batch: MultimodalBatch, pairs: Sequence[Preference], pad_id: int):
    """Summed log-probs [2P] (chosen, rejected interleaved) and token counts [2P] of the pairs' completions
    after their prompts (``batch`` row p is pair p's prompt, embedded once for both)."""
    ids, mask = pad_completions([t for p in pairs for t in (p.chosen, p.rejected)], pad_id)
    scores = policy_logprobs(model, batch, 2, ids, mask)
    return sequence_logprobs(scores.logprobs, mask.to(scores.logprobs.device))


def sample_preferences(model: nn.Module, records: Sequence[Record], samples: Sequence[Sample], config: GenerationConfig,
                       tokenizer, mode: str, checker: Checker = scene_checker, batch_prompts: int = 64,
                       **pair_options) -> PreferenceSet:
    """Pairs among ``config.num_samples`` responses per prompt (``samples[i]`` is ``records[i]``'s prompt),
    with reference log-probs; ``batch_prompts`` per engine call; ``pair_options`` go to ``blocks.rl.build_pairs``."""
    completions = generate_texts(model, samples, config, tokenizer, batch_prompts)
    n = config.num_samples
    pairs, reports_all, unchecked = [], [], 0
    for p in range(len(samples)):
        group = completions[p * n:(p + 1) * n]
        try:
            reports = [check(records[p], c.text, mode, checker) for c in group]
        except Exception as error:  # noqa: BLE001 -- a record the checker cannot read is counted, not fatal
            log.warning("DPO: cannot check prompt %s (%s: %s)", records[p].id, type(error).__name__, error)
            unchecked += 1
            continue
        reports_all += reports
        for pair in build_pairs([c.text for c in group], reports, **pair_options):
            pairs.append(Preference(p, group[pair.chosen].token_ids, group[pair.rejected].token_ids,
                                    chosen_score=pair.chosen_score, rejected_score=pair.rejected_score))
    reference_logprobs(model, samples, pairs, tokenizer)
    stats = {"prompts": len(samples), "responses": len(completions), "unchecked_prompts": unchecked,
             "pairs": len(pairs), "prompts_with_pairs": len({p.record for p in pairs}),
             "sampled_contradiction_rate": contradiction_rate(reports_all),
             "generated_tokens": sum(c.generated_tokens for c in completions)}
    log.info("DPO pairs: %s", stats)
    return PreferenceSet(pairs, stats)
