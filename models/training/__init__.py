"""Training: the data-set loaders, the synthetic requests, fine-tuning, export, calibration and the quality heads.
Never imported by the gateway (an import-linter contract in pyproject.toml keeps it so)."""
