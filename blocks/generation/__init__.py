"""Text generation over a causal LM fed embeddings: the engine behind chat, evaluation and RL rollouts."""

from blocks.generation.engine import FINISH_REASONS, Completion, GenerationConfig, generate, opens_thinking

__all__ = ["FINISH_REASONS", "Completion", "GenerationConfig", "generate", "opens_thinking"]
