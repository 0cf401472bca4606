"""Prompt rendering: the shape of each protocol's prompt (med_r3, the default, and search_r1),
the open and choices question forms, the retrieval-free variant, the MIRAGE-style evaluation
prompt, and chat-template rendering with the real SmolLM2 template."""

import pytest

from medr3_jax.data.answers import mirage_answer
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.protocol import MED_R3, SEARCH_R1

MC = QARecord(id="1", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(id="2", dataset="rarearena", question="A girl with ataxia and low vitamin E.",
                answer_text="AVED", context="")  # fmt: skip


def test_search_prompt_raw():
    # med_r3 (default): the authors' template, the question in its open form (no options shown)
    text = render_prompt(MC, PromptStyle(mode="search", chat=False))
    assert text.endswith("\n\nQuesion: Which organ makes insulin?\nResponse: <think>")
    assert "<search> search query </search>" in text and "<document> search results </document>" in text
    assert "Options:" not in text and "Liver" not in text
    assert text == render_prompt(MC, PromptStyle(mode="search", chat=False), protocol=MED_R3, max_searches=3)
    # search_r1: its instructions state the budget and ask for the letter and text
    text = render_prompt(MC, PromptStyle(mode="search", chat=False, question_form="choices"), protocol=SEARCH_R1,
                         max_searches=3)  # fmt: skip
    assert text.endswith("Question: Which organ makes insulin?\nOptions:\nA. Liver\nB. Pancreas\n<think>")
    assert "<search> your query </search>" in text and "up to 3 times" in text
    assert "<answer> B. Metformin </answer>" in text  # the letter-and-text answer format


def test_choices_form_shows_the_options():
    text = render_prompt(MC, PromptStyle(mode="search", chat=False, question_form="choices"))
    assert text.endswith("Quesion: Which organ makes insulin?\nOptions:\nA. Liver\nB. Pancreas\nResponse: <think>")
    with pytest.raises(ValueError, match="PromptStyle.question_form = 'letters': expected one of 'open', 'choices'"):
        PromptStyle(question_form="letters")


def test_open_form_uses_the_option_free_wording_when_there_is_one():
    record = QARecord(id="4", dataset="medqa", question="Which of the following organs makes insulin?",
                      options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas",
                      open_question="Which organ makes insulin?")  # fmt: skip
    text = render_prompt(record, PromptStyle(mode="search", chat=False))
    assert text.endswith("Quesion: Which organ makes insulin?\nResponse: <think>") and "following" not in text
    choices = render_prompt(record, PromptStyle(mode="search", chat=False, question_form="choices"))
    assert "Quesion: Which of the following organs makes insulin?\nOptions:\nA. Liver" in choices


@pytest.mark.parametrize("protocol", [MED_R3, SEARCH_R1], ids=lambda p: p.name)
def test_reason_prompt_has_no_search(protocol):
    text = render_prompt(MC, PromptStyle(mode="reason", chat=False), protocol=protocol)
    assert "<search>" not in text and "<document>" not in text
    assert text.endswith("<think>")


def test_open_question_asks_for_a_short_answer():
    text = render_prompt(OPEN, PromptStyle(mode="search", chat=False), protocol=SEARCH_R1)
    assert "Options:" not in text and "in a few words" in text
    text = render_prompt(OPEN, PromptStyle(mode="search", chat=False, question_form="choices"))
    assert "Options:" not in text and text.endswith("Quesion: A girl with ataxia and low vitamin E.\nResponse: <think>")
    with pytest.raises(ValueError, match="has no options"):
        render_prompt(OPEN, PromptStyle(mode="mc_eval", chat=False))


def test_context_only_when_asked():
    record = QARecord(id="3", dataset="pubmedqa", question="Does X help?", options={"A": "yes", "B": "no", "C": "maybe"},
                      answer="A", answer_text="yes", context="RESULTS: X helped.")  # fmt: skip
    assert "Context: RESULTS: X helped." not in render_prompt(record, PromptStyle(chat=False))
    assert "Quesion: Context: RESULTS: X helped.\nDoes X help?\nResponse: <think>" in render_prompt(
        record, PromptStyle(chat=False, show_context=True)
    )
    assert "Context: RESULTS: X helped.\nQuestion: Does X help?" in render_prompt(
        record, PromptStyle(chat=False, show_context=True), protocol=SEARCH_R1
    )


def test_chat_rendering_with_the_real_template(smollm2_tokenizer):
    text = render_prompt(MC, PromptStyle(mode="search"), smollm2_tokenizer)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n<think>")
    assert "Quesion: Which organ makes insulin?<|im_end|>" in text and "Response:" not in text
    ids = smollm2_tokenizer.encode(text)
    assert smollm2_tokenizer.decode(ids) == text
    text = render_prompt(MC, PromptStyle(mode="search", question_form="choices"), smollm2_tokenizer, protocol=SEARCH_R1)
    assert "Question: Which organ makes insulin?\nOptions:\nA. Liver\nB. Pancreas<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt(MC, PromptStyle(mode="search"))


def test_mc_eval_prompt_asks_for_the_json_mirage_reads(smollm2_tokenizer):
    text = render_prompt(MC, PromptStyle(mode="mc_eval"), smollm2_tokenizer)
    assert '"answer_choice"' in text and "A. Liver\nB. Pancreas" in text
    assert text.endswith("<|im_start|>assistant\n")
    # a reply in the requested form is read back by MIRAGE's extraction
    assert mirage_answer('{"step_by_step_thinking": "Beta cells.", "answer_choice": "B"}') == "B"


def test_bad_style_is_named():
    with pytest.raises(ValueError, match="PromptStyle.mode = 'rag': expected one of 'search', 'reason', 'mc_eval'"):
        PromptStyle(mode="rag")
