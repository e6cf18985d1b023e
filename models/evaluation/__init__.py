"""Evaluation: the tier-1 and router reports on test splits, their metrics, and the semantic-router peer.
Never imported by the gateway."""
