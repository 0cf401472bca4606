"""`python -m medr3_jax.retrieval.search`: look passages up in an index directory.

python -m medr3_jax.retrieval.search --index index/medcorp --k 5 "troponin in MI" "scurvy"
python -m medr3_jax.retrieval.search --index index/medcorp --backend fusion --json "troponin"
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from medr3_jax.cli import ArgumentParser, entry_point
from medr3_jax.retrieval.retriever import Retriever


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    p = ArgumentParser(prog="python -m medr3_jax.retrieval.search", description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, help="directory written by medr3_jax.retrieval.embed")
    p.add_argument("--backend", default="exact", choices=["exact", "scann", "bm25", "fusion"])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per query: ids and scores")
    p.add_argument("queries", nargs="+")
    args = p.parse_args(argv)
    retriever = Retriever(args.index, backend=args.backend)
    ids, scores = retriever.search(args.queries, args.k)
    for query, row_ids, row_scores in zip(args.queries, ids, scores):
        if args.json:
            print(json.dumps({"query": query, "ids": row_ids, "scores": [round(float(s), 6) for s in row_scores]}))
            continue
        print(f"# {query}")
        for rank, (pid, score) in enumerate(zip(row_ids, row_scores), 1):
            passage = retriever.passage(pid)
            print(f"{rank:>3}  {score:8.4f}  {pid}  {passage.title} | {passage.contents[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
