"""LLM slot: transformers causal LMs built from explicit sizes or a local directory (no downloads)."""

from blocks.llm.qwen3 import from_pretrained_dir, layer_classes, qwen3, qwen3_8b, qwen3_tiny

__all__ = ["from_pretrained_dir", "layer_classes", "qwen3", "qwen3_8b", "qwen3_tiny"]
