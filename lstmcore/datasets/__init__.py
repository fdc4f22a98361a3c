"""Datasets for training: padded arrays plus lengths, split into train/valid/test.

    >>> from lstmcore.datasets import load_dataset
    >>> data = load_dataset("adding", length=100, n_train=1000, seed=0)
    >>> data.train.x.shape, data.train.y.shape, data.output, data.per_step
    ((1000, 100, 2), (1000, 1), 'linear', False)

Names for ``load_dataset``: ``"jsb_chorales"`` (``path=None, download=True``), ``"adding"``, ``"temporal_order"``,
``"copy"`` (``length``, ``n_train``, ``n_valid``, ``n_test``, ``seed``), and those of plugins (``register_datasets``). Every call builds the data afresh (the
synthetic tasks from their seed, JSB Chorales from its file), so a worker process can call it cheaply.
"""
from __future__ import annotations

from lstmcore.hookspecs import hookimpl
from lstmcore.datasets._split import Dataset, DatasetError, Split, pad_sequences
from lstmcore.datasets.jsb import load_jsb_chorales
from lstmcore.datasets.synthetic import adding_problem, copy_task, temporal_order
from lstmcore.datasets.user import from_sequences

#: The built-in datasets, registered through the ``register_datasets`` hook like a plugin's.
LOADERS = {
    "jsb_chorales": load_jsb_chorales,
    "adding": adding_problem,
    "temporal_order": temporal_order,
    "copy": copy_task,
}

__all__ = ["Split", "Dataset", "DatasetError", "load_dataset", "load_jsb_chorales", "adding_problem", "temporal_order", "copy_task",
           "from_sequences", "pad_sequences", "LOADERS", "list_datasets"]


@hookimpl
def register_datasets(register):
    for name, loader in LOADERS.items():
        register(name, loader)


def list_datasets() -> list[str]:
    """Sorted names of every registered dataset (the built-ins and the plugins')."""
    from lstmcore.plugins import registry

    return registry.names("dataset")


def load_dataset(name: str, **kwargs) -> Dataset:
    """The dataset called ``name`` (a built-in or a plugin's, see ``list_datasets``), built with ``kwargs``."""
    from lstmcore.plugins import registry

    return registry.dataset(name)(**kwargs)
