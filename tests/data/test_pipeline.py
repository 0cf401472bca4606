"""The question stream: determinism by seed, per-process shares, epochs, exact resume, buckets."""

import pytest

from medr3_jax.data.pipeline import QuestionStream, length_bucket
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.models.tokenizers import byte_tokenizer

TOK = byte_tokenizer()
STYLE = PromptStyle(mode="reason", chat=False)
RECORDS = [
    QARecord(
        id=f"{i:03d}",
        dataset="medqa",
        question="Q" * (i % 7 + 1),
        options={"A": "a", "B": "b"},
        answer="A",
        answer_text="a",
    )  # fmt: skip
    for i in range(20)
]


def _stream(**kw):
    args = dict(tokenizer=TOK, style=STYLE, batch_size=4, seed=0, buckets=(1024,), process_index=0, process_count=1)
    return QuestionStream(RECORDS, **(args | kw))


def _ids(batches):
    return [[r.id for r in b.records] for b in batches]


def test_same_seed_same_order_other_seed_other_order():
    first = _ids(_stream().next() for _ in range(5))
    assert first == _ids(_stream().next() for _ in range(5))
    assert first != _ids(_stream(seed=1).next() for _ in range(5))


def test_one_epoch_is_a_permutation_and_the_next_epoch_reshuffles():
    stream = _stream()
    epoch1 = sum(_ids(stream.next() for _ in range(5)), [])
    epoch2 = sum(_ids(stream.next() for _ in range(5)), [])
    assert sorted(epoch1) == sorted(epoch2) == [r.id for r in RECORDS]
    assert epoch1 != epoch2


def test_processes_get_disjoint_shares_that_cover_the_data():
    shares = [sum(_ids(_stream(process_index=p, process_count=3, batch_size=2, num_epochs=1)), []) for p in range(3)]
    assert all(len(s) == 6 for s in shares)  # 20 -> 18 usable (equal shares), 6 per process
    assert len(set(shares[0]) | set(shares[1]) | set(shares[2])) == 18


def test_resume_continues_with_the_next_unseen_batch():
    stream = _stream()
    for _ in range(3):
        stream.next()
    saved = stream.position
    expected = _ids(stream.next() for _ in range(4))
    resumed = _stream()
    resumed.seek(saved)
    assert _ids(resumed.next() for _ in range(4)) == expected


def test_prompts_are_the_tokenised_rendered_records():
    batch = _stream().next()
    for record, ids in zip(batch.records, batch.prompts):
        assert list(ids) == TOK.encode(render_prompt(record, STYLE))
    assert batch.position == 0 and batch.bucket == 1024


def test_buckets():
    assert length_bucket(100, (128, 256)) == 128 and length_bucket(129, (256, 128)) == 256
    longest = max(len(TOK.encode(render_prompt(r, STYLE))) for r in RECORDS)
    with pytest.raises(DataError, match=r"record '\d{3}': prompt of \d+ tokens is longer than the largest bucket 64"):
        _stream(buckets=(64,)).next()
    assert _stream(buckets=(longest - 1, longest)).next().bucket in (longest - 1, longest)


def test_finite_stream_ends_and_tiny_data_is_refused():
    assert len(list(_stream(num_epochs=2))) == 10
    with pytest.raises(DataError, match="batch_size=32"):
        _stream(batch_size=32)
