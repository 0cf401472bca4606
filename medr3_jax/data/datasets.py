"""Build a benchmark once from its manual directory, then read its records back.

    builder = prepare_dataset("medqa", manual_dir="~/raw/medqa", data_dir="~/tensorflow_datasets")
    records = load_records("medqa", "test", data_dir="~/tensorflow_datasets")

Files are array_record, read with `as_data_source` (no TensorFlow). The data source's order
is not the file order, so records come back sorted by id: the same on every host.
"""

from __future__ import annotations

import logging
import os

import tensorflow_datasets as tfds

from medr3_jax.data.builders import BUILDERS, QABuilder
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.progress import waiting

log = logging.getLogger(__name__)

# `name` or `name/config`, as users spell them on the command line and in gin.
DATASET_NAMES = tuple(BUILDERS)


def _builder(dataset: str, data_dir: str | None, **kwargs) -> QABuilder:
    name, _, config = dataset.partition("/")
    if name not in BUILDERS:
        raise DataError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_NAMES)} (optionally name/config)"
        )
    cls = BUILDERS[name]
    if config and config not in {c.name for c in cls.BUILDER_CONFIGS}:
        raise DataError(f"dataset {name!r} has no config {config!r}; configs: {[c.name for c in cls.BUILDER_CONFIGS]}")
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    return cls(data_dir=data_dir, config=config or None, file_format="array_record", **kwargs)


def prepare_dataset(
    dataset: str, manual_dir: str, data_dir: str | None = None, *, skip_bad_records: bool = False
) -> QABuilder:
    """Builds `dataset` (unless already built) from the raw release under `manual_dir`."""
    manual_dir = os.path.expanduser(manual_dir)
    if not os.path.isdir(manual_dir):
        raise DataError(f"--manual_dir {manual_dir}: no such directory")
    builder = _builder(dataset, data_dir, skip_bad_records=skip_bad_records)
    with waiting(f"preparing {dataset} from {manual_dir}"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def load_records(dataset: str, split: str, data_dir: str | None = None) -> list[QARecord]:
    """All records of one built split, sorted by id."""
    builder = _builder(dataset, data_dir)
    if not builder.is_prepared():
        raise DataError(
            f"dataset {dataset!r} is not built under {builder.data_dir}; run "
            f"`python -m medr3_jax.data.prepare --dataset {dataset} --manual_dir DIR`"
        )
    if split not in builder.info.splits:
        raise DataError(f"dataset {dataset!r} has no split {split!r}; splits: {sorted(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    records = [QARecord.from_example(source[i]) for i in range(len(source))]
    return sorted(records, key=lambda r: r.id)


def builder_splits(dataset: str, data_dir: str | None = None) -> list[str]:
    """The splits of a built dataset, in the order the builder declares them."""
    builder = _builder(dataset, data_dir)
    if not builder.is_prepared():
        raise DataError(f"dataset {dataset!r} is not built under {builder.data_dir}")
    return list(builder.info.splits)
