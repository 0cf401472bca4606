"""One of two processes (jax.distributed on 127.0.0.1): the retriever across hosts — exact:
the table split by rows over both processes' devices; scann: one share of the rows per process,
candidates merged; then a ProcessShardedJudge over an echo judge that names the process that
answered. Each process prints the ids, scores and judge replies as JSON.

    python tests/trainer/multihost_search.py INDEX_DIR BACKEND PORT PROCESS_ID QUERY...
"""

import json
import sys

from medr3_jax.sharding import initialize


def main(index_dir: str, backend: str, port: str, process_id: str, *queries: str) -> None:
    initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    import jax  # noqa: PLC0415

    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    retriever = Retriever(index_dir, backend=backend)
    ids, scores = retriever.search(list(queries), 5)
    dense = retriever._dense  # noqa: SLF001 -- the test checks where the rows live
    if backend == "exact":
        where = {
            "table_shards": len(dense.table.sharding.device_set),
            "local_shards": len(dense.table.addressable_shards),
        }
    else:
        where = {"local_rows": [dense.local.row_offset, dense.local.row_offset + dense.local.num_rows]}
    from medr3_jax.rewards.shared_judge import ProcessShardedJudge  # noqa: PLC0415

    class EchoJudge:
        def complete(self, prompts):
            return [None if "fail" in p else f"{p} ✓ by {jax.process_index()}" for p in prompts]

    replies = ProcessShardedJudge(EchoJudge()).complete([*queries, "fail", "é"])
    out = {"ids": ids, "scores": scores.tolist(), "devices": jax.device_count(), "process": jax.process_index(),
           "judge": replies}  # fmt: skip
    print(json.dumps(out | where))


if __name__ == "__main__":
    main(*sys.argv[1:])
