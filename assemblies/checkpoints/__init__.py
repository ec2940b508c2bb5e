"""Checkpoint import/export (safetensors only). Import the submodule you need, e.g.
``from assemblies.checkpoints.siglip import load_siglip_vision``."""
