"""Prompt rendering: the Med-R3 protocol's shape, the retrieval-free variant, the MIRAGE-style
evaluation prompt, and chat-template rendering with the real SmolLM2 template."""

import pytest

from medr3_jax.data.answers import mirage_answer
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord

MC = QARecord(id="1", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(id="2", dataset="rarearena", question="A girl with ataxia and low vitamin E.",
                answer_text="AVED", context="")  # fmt: skip


def test_search_prompt_raw():
    text = render_prompt(MC, PromptStyle(mode="search", chat=False, max_searches=3))
    assert text.endswith("Question: Which organ makes insulin?\nOptions:\nA. Liver\nB. Pancreas\n<think>")
    assert "<search> your query </search>" in text and "up to 3 times" in text
    assert "<answer> B. Metformin </answer>" in text  # the letter-and-text answer format


def test_reason_prompt_has_no_search():
    text = render_prompt(MC, PromptStyle(mode="reason", chat=False))
    assert "<search>" not in text and "<document>" not in text
    assert text.endswith("<think>")


def test_open_question_asks_for_a_short_answer():
    text = render_prompt(OPEN, PromptStyle(mode="search", chat=False))
    assert "Options:" not in text and "in a few words" in text
    with pytest.raises(ValueError, match="has no options"):
        render_prompt(OPEN, PromptStyle(mode="mc_eval", chat=False))


def test_context_only_when_asked():
    record = QARecord(id="3", dataset="pubmedqa", question="Does X help?", options={"A": "yes", "B": "no", "C": "maybe"},
                      answer="A", answer_text="yes", context="RESULTS: X helped.")  # fmt: skip
    assert "Context: RESULTS: X helped." not in render_prompt(record, PromptStyle(chat=False))
    assert "Context: RESULTS: X helped.\nQuestion: Does X help?" in render_prompt(
        record, PromptStyle(chat=False, show_context=True)
    )


def test_chat_rendering_with_the_real_template(smollm2_tokenizer):
    text = render_prompt(MC, PromptStyle(mode="search"), smollm2_tokenizer)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n<think>")
    assert "Question: Which organ makes insulin?" in text
    ids = smollm2_tokenizer.encode(text)
    assert smollm2_tokenizer.decode(ids) == text
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt(MC, PromptStyle(mode="search"))


def test_mc_eval_prompt_asks_for_the_json_mirage_reads(smollm2_tokenizer):
    text = render_prompt(MC, PromptStyle(mode="mc_eval"), smollm2_tokenizer)
    assert '"answer_choice"' in text and "A. Liver\nB. Pancreas" in text
    assert text.endswith("<|im_start|>assistant\n")
    # a reply in the requested form is read back by MIRAGE's extraction
    assert mirage_answer('{"step_by_step_thinking": "Beta cells.", "answer_choice": "B"}') == "B"


def test_bad_style_is_named():
    with pytest.raises(ValueError, match="PromptStyle.mode='rag'"):
        PromptStyle(mode="rag")
