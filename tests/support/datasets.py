"""Whether the public data sets are here: tests that read them skip, saying why, on a machine without them."""

from __future__ import annotations

import pytest

from models.training import datasets as ds


def have_datasets() -> bool:
    """Whether the data folder (``$TIERWISE_DATASETS``, or ../shared/datasets) exists."""
    try:
        ds.datasets_dir()
    except FileNotFoundError:
        return False
    return True


needs_datasets = pytest.mark.skipif(not have_datasets(), reason="the data folder ($TIERWISE_DATASETS) is not here")
