"""Generation-based evaluation (``tasks/evaluate.py``, the main job's held-out tables, RL proofs).

    from assemblies.evaluation import HeldoutSet, ReferenceFile, evaluate, score_file
    result = evaluate(chat, HeldoutSet(per_task=32), modes=("short", "long"), predictions="preds.jsonl")
    rows, scores = score_file("preds.jsonl")     # rescore without generating
"""

from assemblies.evaluation.evaluator import DEFAULT_MAX_NEW_TOKENS, Evaluation, evaluate
from assemblies.evaluation.records import BUILTIN_CORPORA, HeldoutSet, ReferenceFile
from assemblies.evaluation.scoring import (TaskScore, format_table, mean_accuracy, read_predictions, score_file,
                                           score_predictions, score_row)

__all__ = ["BUILTIN_CORPORA", "DEFAULT_MAX_NEW_TOKENS", "Evaluation", "HeldoutSet", "ReferenceFile", "TaskScore",
           "evaluate", "format_table", "mean_accuracy", "read_predictions", "score_file", "score_predictions",
           "score_row"]
