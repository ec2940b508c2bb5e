"""Train the tiny MiniCPM-V 4.5 through all stages on the built-in synthetic data (CPU, minutes).

    python examples/03_train_tiny.py [out_dir] [hydra overrides...]
    # the same run from the command line:
    python tasks/train.py +assembly=mcpv45 scale=tiny hydra.run.dir=<out_dir>

1. ``train(cfg)`` runs stage0 (contrastive pre-training of the from-scratch vision tower, which the
   full recipe gets from SigLIP) -> stage1 -> stage2 -> stage3 -> sft -> sft_long_cot -> rl_hybrid ->
   rlaif_dpo, each starting from the previous stage's weights, and prints what each stage trains on and a table per stage (loss,
   samples/s, peak memory, held-out accuracy per task next to chance: teacher-forced, and of answers
   generated in short and in long mode).
2. The result is exported in the official MiniCPM-V 4.5 layout with the tokenizer and processor
   settings it was trained with, and loaded back from that directory alone (``Chat.from_checkpoint``);
   the reloaded model answers a few held-out questions by greedy generation.
3. ``curves.png`` (losses, accuracies, learning rates, gradient norm) and ``metrics.json`` are in the output
   directory.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from assemblies.chat import Chat
from assemblies.training.config import register_schemas
from assemblies.training.pipeline import train
from blocks.batch import collate
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.synthetic import make_corpus

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(out_dir: Path, overrides: list[str]) -> None:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+assembly=mcpv45", "scale=tiny", f"paths.output_dir={out_dir}", *overrides])
    accuracy = train(cfg)
    print(f"\nmean held-out exact match after the last stage: {accuracy:.3f}")

    chat = Chat.from_checkpoint(out_dir / "export")  # weights, tokenizer, processor settings and stop ids
    processor = MiniCPMVProcessor(chat.tokenizer, chat.processor_config)
    for name in ("scenes", "digits"):
        records = make_corpus(name, size=4, split="heldout", seed=int(cfg.seed))
        batch = collate([processor(r, mode="inference") for r in records], chat.tokenizer.pad_token_id,
                        padding_side="left")
        completions = chat.model.generate(batch, max_new_tokens=6, tokenizer=chat.tokenizer, **chat.token_ids)
        for record, completion in zip(records, completions):
            question = record.conversations[0]["content"].splitlines()[-1]
            print(f"  {name}: {question!r} -> {completion.text.strip()!r} (reference {record.answer!r})")
    print(f"\nexport: {out_dir / 'export'}\ncurves: {out_dir / 'curves.png'}\nmetrics: {out_dir / 'metrics.json'}")


if __name__ == "__main__":
    args = sys.argv[1:]
    target = Path(args.pop(0)) if args and "=" not in args[0] else Path(tempfile.mkdtemp(prefix="mcpv_tiny_"))
    main(target, args)
