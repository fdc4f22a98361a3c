"""Datasets for training: padded arrays plus lengths, split into train/valid/test.

    >>> from lstmcore.datasets import load_dataset
    >>> data = load_dataset("adding", length=100, n_train=1000, seed=0)
    >>> data.train.x.shape, data.train.y.shape, data.output, data.per_step
    ((1000, 100, 2), (1000, 1), 'linear', False)

Names for ``load_dataset``: ``"jsb_chorales"`` (``path=None, download=True``), ``"adding"``, ``"temporal_order"``,
``"copy"`` (``length``, ``n_train``, ``n_valid``, ``n_test``, ``seed``). Every call builds the data afresh (the
synthetic tasks from their seed, JSB Chorales from its file), so a worker process can call it cheaply.
"""
from __future__ import annotations

from lstmcore.datasets._split import Dataset, DatasetError, Split, pad_sequences
from lstmcore.datasets.jsb import load_jsb_chorales
from lstmcore.datasets.synthetic import adding_problem, copy_task, temporal_order
from lstmcore.datasets.user import from_sequences

LOADERS = {
    "jsb_chorales": load_jsb_chorales,
    "adding": adding_problem,
    "temporal_order": temporal_order,
    "copy": copy_task,
}

__all__ = ["Split", "Dataset", "DatasetError", "load_dataset", "load_jsb_chorales", "adding_problem", "temporal_order", "copy_task",
           "from_sequences", "pad_sequences", "LOADERS"]


def load_dataset(name: str, **kwargs) -> Dataset:
    """The dataset called ``name`` (one of ``LOADERS``), built with ``kwargs``."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}") from None
    return loader(**kwargs)
