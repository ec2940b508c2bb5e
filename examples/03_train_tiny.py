"""Train the tiny MiniCPM-V 4.5 through all stages on the built-in synthetic data (CPU, minutes).

    python examples/03_train_tiny.py [out_dir] [hydra overrides...]
    # the same run from the command line:
    python tasks/train.py +assembly=mcpv45 scale=tiny hydra.run.dir=<out_dir>

1. ``train(cfg)`` runs stage0 (contrastive pre-training of the from-scratch vision tower, which the
   full recipe gets from SigLIP) -> stage1 -> stage2 -> stage3 -> sft -> sft_long_cot, each starting
   from the previous stage's weights, and prints what each stage trains on and a table per stage (loss,
   samples/s, peak memory, held-out accuracy per task next to chance: teacher-forced, and of answers
   generated in short and in long mode).
2. The result is exported in the official MiniCPM-V 4.5 layout and loaded back with the official
   loader; the reloaded model answers a few held-out questions by greedy generation.
3. ``curves.png`` (losses, accuracies, learning rates, gradient norm) and ``metrics.json`` are in the output
   directory.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from assemblies.checkpoints.official import load_official
from assemblies.training.config import register_schemas
from assemblies.training.pipeline import train
from blocks.batch import collate
from blocks.data.synthetic import make_corpus
from blocks.generation.tokens import generation_token_ids

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(out_dir: Path, overrides: list[str]) -> None:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+assembly=mcpv45", "scale=tiny", f"paths.output_dir={out_dir}", *overrides])
    accuracy = train(cfg)
    print(f"\nmean held-out exact match after the last stage: {accuracy:.3f}")

    model = load_official(out_dir / "export").eval()
    tokenizer = instantiate(cfg.data.tokenizer)
    processor = instantiate(cfg.data.processor)(tokenizer=tokenizer, tokens_per_group=model.resampler.tokens_per_group)
    for name in ("scenes", "digits"):
        records = make_corpus(name, size=4, split="heldout", seed=int(cfg.seed))
        batch = collate([processor(r, mode="inference") for r in records], tokenizer.pad_token_id, padding_side="left")
        completions = model.generate(batch, max_new_tokens=6, tokenizer=tokenizer,
                                     **generation_token_ids(tokenizer))
        for record, completion in zip(records, completions):
            question = record.conversations[0]["content"].splitlines()[-1]
            print(f"  {name}: {question!r} -> {completion.text.strip()!r} (reference {record.answer!r})")
    print(f"\nexport: {out_dir / 'export'}\ncurves: {out_dir / 'curves.png'}\nmetrics: {out_dir / 'metrics.json'}")


if __name__ == "__main__":
    args = sys.argv[1:]
    target = Path(args.pop(0)) if args and "=" not in args[0] else Path(tempfile.mkdtemp(prefix="mcpv_tiny_"))
    main(target, args)
