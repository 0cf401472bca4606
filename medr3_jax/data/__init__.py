"""Medical QA data: one record type, readers of the official releases, TFDS builders, prompts,
answer extraction and the resumable question stream. Builders import tensorflow_datasets, so
they (and `datasets`, `prepare`) are imported where used."""

from medr3_jax.data.answers import mirage_answer, normalize_answer, option_letter, tagged_answer
from medr3_jax.data.pipeline import PromptBatch, QuestionStream, length_bucket
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import BadRecords, DataError, QARecord

__all__ = [
    "BadRecords",
    "DataError",
    "PromptBatch",
    "PromptStyle",
    "QARecord",
    "QuestionStream",
    "length_bucket",
    "mirage_answer",
    "normalize_answer",
    "option_letter",
    "render_prompt",
    "tagged_answer",
]
