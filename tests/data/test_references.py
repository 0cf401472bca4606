"""data.references: the bundled reference records (one per sample training question, well formed
under the authors' grammar, answering the gold), and bad lines counted and named, never fatal."""

import json
import logging

import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax.data.datasets import load_records
from medr3_jax.data.references import Reference, ReferenceStats, read_references
from medr3_jax.protocol import MED_R3


def test_bundled_references_cover_every_sample_training_question(sample_data_dir):
    stats = ReferenceStats()
    refs = read_references(assets.sample_references(), stats)
    records = [r for name in ("medqa", "medmcqa", "pubmedqa") for r in load_records(name, "train", sample_data_dir)]
    assert stats.read == len(records) == 21 and not stats.bad_lines
    for record in records:
        (ref,) = refs[(record.dataset, record.id)]
        assert MED_R3.format_score(ref.chain, retrieval=True) == 1.0  # the authors' grammar, searching in the think
        think, answer = MED_R3.think_and_answer(ref.chain)
        assert answer == (record.answer_text or record.options[record.answer]) and ref.text == think
        assert "<search>" not in ref.text and "<document>" not in ref.text and len(ref.triples) >= 3
        assert all(len(t) == 4 and isinstance(t[3], bool) for t in ref.triples)
        assert any(t[3] for t in ref.triples)  # some knowledge came from the retrieved passage
        assert json.loads(ref.as_json()) == [list(t) for t in ref.triples]


def test_bundled_vectors_are_the_bundled_encoders_embedding_of_the_think_text(sample_index_dir):
    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    retriever = Retriever(sample_index_dir)  # the bundled corpus under MiniLM, as training's sample index
    refs = [ref for chains in read_references(assets.sample_references()).values() for ref in chains]
    assert {ref.encoder for ref in refs} == {retriever.embedding_id}
    fresh = retriever.encode_queries([ref.text for ref in refs])
    np.testing.assert_allclose(np.array([ref.vector for ref in refs]), fresh, atol=2e-6)


def test_bad_lines_are_counted_named_and_left_out(tmp_path, caplog):
    good = {
        "dataset": "medqa",
        "id": "q1",
        "chain": "<think>a</think><answer>b</answer>",
        "triples": [["a", "r", "b", True]],
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(good | {"triples": [["a", "r"]]}),
        json.dumps(good | {"id": ""}),
        json.dumps(good | {"vector": ["x"]}),
        "",
        json.dumps(good | {"id": "q2", "grade": 5, "vector": [0.5, 1], "extra": "ignored"}),
        json.dumps(good | {"chain": "<think>c</think><answer>d</answer>"}),  # a second reference for q1
    ]
    path = tmp_path / "references.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stats = ReferenceStats()
    with caplog.at_level(logging.WARNING, logger="medr3_jax.data.references"):
        refs = read_references(str(path), stats)
    assert stats.read == 3 and dict(stats.bad_lines) == {"not JSON": 1, "malformed": 3}
    assert [len(refs[("medqa", "q1")]), len(refs[("medqa", "q2")])] == [2, 1]
    assert refs[("medqa", "q2")][0] == Reference(
        "medqa", "q2", good["chain"], (("a", "r", "b", True),), 5.0, (0.5, 1.0)
    )
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and f"{path}:2: not JSON" in messages[0] and f"{path}:3: field 'triples'" in messages[1]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_references(str(tmp_path / "nope.jsonl"))
