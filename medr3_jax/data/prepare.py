"""Build one medical QA benchmark from its official raw release (run once, like `tfds build`).

    python -m medr3_jax.data.prepare --dataset medqa --manual_dir ~/raw/MedQA [--data_dir OUT] [--dump]
    python -m medr3_jax.data.prepare --dataset pubmedqa --sample          # the bundled sample set

Prints a JSON summary (records per split, malformed records skipped, records left out on
purpose); `--dump` also prints every record as one JSON line. docs/DATA.md says where each
release lives and which files go where.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys

from medr3_jax import assets
from medr3_jax.cli import ArgumentParser, entry_point, error_line
from medr3_jax.data.datasets import DATASET_NAMES, load_records, prepare_dataset
from medr3_jax.data.records import DataError


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASET_NAMES)}, optionally name/config")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manual_dir", help="the unpacked official release (searched recursively)")
    source.add_argument("--sample", action="store_true", help="build the bundled sample set instead")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory (default: TFDS's, ~/tensorflow_datasets)")
    parser.add_argument("--skip_bad_records", action="store_true", help="skip and count malformed records")
    parser.add_argument("--dump", action="store_true", help="also print every record as one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manual_dir = assets.sample_dataset_dir(args.dataset) if args.sample else args.manual_dir
        with contextlib.redirect_stdout(sys.stderr):  # TFDS narrates on stdout; ours is JSON only
            builder = prepare_dataset(args.dataset, manual_dir, args.data_dir, skip_bad_records=args.skip_bad_records)
        splits = {name: info.num_examples for name, info in builder.info.splits.items()}
        metadata = dict(builder.info.metadata or {})
        summary = {
            "dataset": args.dataset,
            "data_dir": builder.data_dir,
            "splits": splits,
            "skipped": metadata.get("skipped", {}),
            "filtered": metadata.get("filtered", {}),
        }
        print(json.dumps(summary))
        if args.dump:
            for split in splits:
                for record in load_records(args.dataset, split, args.data_dir):
                    print(json.dumps({"split": split} | record.to_json(), ensure_ascii=False))
    except DataError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
