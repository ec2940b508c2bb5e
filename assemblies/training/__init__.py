"""Training: Lightning stages assembled by Hydra.

``pipeline.train(cfg)`` runs the configured stages in order (``tasks/train.py`` is a thin wrapper);
``module`` / ``datamodule`` are the Lightning wrappers; ``stages`` freezes blocks and builds
per-block parameter groups; ``schedules`` holds the learning-rate shapes (WSD, cosine).
"""
