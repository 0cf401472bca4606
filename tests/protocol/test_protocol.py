"""The protocol module: prompt templates (the authors' character for character), stop strings,
the assistant-prefix rule, document blocks and passage scrubbing, and the protocol knob."""

import dataclasses

import pytest

from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.protocol import (
    MED_R3,
    SEARCH_R1,
    STOP_STRINGS,
    assistant_prefix,
    get_protocol,
    parse_search_turn,
    scrub_passage,
)

# `R1_ORIGIN_PROMPT_ADD_LANGUAGE_AND_SEARCH` as it stands in `myverl/prompt.py` (GitHub
# 8023looker/Med-R3), the template `data_preprocess/medqa_cot_multi.py` fills with the question.
AUTHORS_TEMPLATE = """You are a medical expert.  
Given a question, you should answer it by first thinking about the reasoning process in the mind and then providing the final answer. 
Please answer the question in the format of <think>...</think><answer>...</answer>. 
That is, <think>Here is the reasoning process</think><answer>Here is the answer</answer>. 
You should perform thinking with decomposing, reflecting, brainstorming, verifying, refining, and revising. 
Besides, you can perform searching for uncertain knowledge if necessary with the format of <search> search query </search> during your thinking process.
Then, the search system will provide you with the retrieval information with the format of <document> search results </document>.
Think and answer with the same language as the question.

Quesion: {prompt}
Response: <think>
""".strip()  # noqa: W291 (the trailing spaces are theirs)

QUESTION = (
    "A 46-year-old woman on sertraline develops clonus after tramadol. What is the most appropriate pharmacotherapy?"
)
RECORD = QARecord(id="q", dataset="medqa", question=QUESTION, options={"A": "Dantrolene", "B": "Cyproheptadine"},
                  answer="B", answer_text="Cyproheptadine")  # fmt: skip


def test_med_r3_raw_prompt_is_the_authors_template():
    body = MED_R3.prompt_body(QUESTION, options={}, context="", retrieval=True, max_searches=4)
    assert MED_R3.raw_prompt(body) == AUTHORS_TEMPLATE.format(prompt=QUESTION)
    style = PromptStyle(mode="search", chat=False, question_form="open")
    assert render_prompt(RECORD, style, protocol=MED_R3) == AUTHORS_TEMPLATE.format(prompt=QUESTION)


def test_med_r3_prompt_without_retrieval_drops_the_two_search_sentences_only():
    with_search = MED_R3.raw_prompt(
        MED_R3.prompt_body(QUESTION, options={}, context="", retrieval=True, max_searches=4)
    )
    without = MED_R3.raw_prompt(MED_R3.prompt_body(QUESTION, options={}, context="", retrieval=False, max_searches=4))
    assert "<search>" not in without and "<document>" not in without
    dropped = [line for line in with_search.split("\n") if line not in without.split("\n")]
    assert [line.split(" ")[0] for line in dropped] == ["Besides,", "Then,"]


def test_question_forms_and_chat_variant():
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    tok = dataclasses.replace(byte_tokenizer(), chat_template=template)
    choices = render_prompt(RECORD, PromptStyle(mode="search", chat=False, question_form="choices"))
    assert f"Quesion: {QUESTION}\nOptions:\nA. Dantrolene\nB. Cyproheptadine\nResponse: <think>" in choices
    open_form = render_prompt(RECORD, PromptStyle(mode="search", chat=False, question_form="open"))
    assert "Dantrolene" not in open_form and "Options" not in open_form
    chat = render_prompt(RECORD, PromptStyle(mode="search", chat=True), tok)
    body = MED_R3.prompt_body(QUESTION, options={}, context="", retrieval=True, max_searches=4)
    assert chat == f"<|user|>{body}\n<|assistant|><think>"  # the user turn, then <think> opens the reply


def test_search_r1_prompt_states_the_rollouts_search_budget():
    text = render_prompt(RECORD, PromptStyle(mode="search", chat=False, question_form="choices"), protocol=SEARCH_R1,
                         max_searches=3)  # fmt: skip
    assert "You may search up to 3 times." in text and text.endswith("B. Cyproheptadine\n<think>")
    assert "close your reasoning with </think>" in text


def test_stop_strings_only_when_searching():
    for protocol in (MED_R3, SEARCH_R1):
        assert protocol.stop_strings(retrieval=True) == STOP_STRINGS == ("</search>", "<document>", "</document>")
        assert protocol.stop_strings(retrieval=False) == ()


@pytest.mark.parametrize(
    "prompt, prefix",
    [
        (AUTHORS_TEMPLATE.format(prompt="Q?"), "<think>"),  # the instructions quote closed tags
        ("<|im_start|>assistant\n<think>", "<think>"),
        ("Q? <think>I recall that", "<think>I recall that"),  # a prefilled start of the reasoning
        ("Q? <think>I should check.</think>\n<search", "<think>I should check.</think>\n<search"),  # search_r1 prefill
        ("Please reply in JSON.", ""),
        ("That is, <think>reasoning</think><answer>x</answer>.", ""),  # quoted tags in instructions
    ],
)
def test_assistant_prefix(prompt, prefix):
    assert assistant_prefix(prompt) == prefix


def test_search_turn_parsing_is_the_authors_rule():
    assert parse_search_turn("I should check<search>  ACE inhibitor cough </search>") == "ACE inhibitor cough"
    for bad in ("<search>  </search>", "<search>a<search>b</search>", "a</search>"):
        with pytest.raises(ValueError):
            parse_search_turn(bad)


def test_document_blocks_layouts():
    tok = byte_tokenizer()
    passages = [tok.encode("Insulin lowers glucose."), tok.encode("Beta cells.")]
    med = MED_R3.document_blocks(tok.encode)
    assert (
        tok.decode(med.passages(passages))
        == "<document>Insulin lowers glucose.</document><document>Beta cells.</document>"
    )
    assert tok.decode(med.failed()) == "<document>search failed, no document found</document>"
    r1 = SEARCH_R1.document_blocks(tok.encode)
    assert tok.decode(r1.passages(passages)) == (
        "\n<document>Insulin lowers glucose.</document>\n<document>Beta cells.</document>\n"
    )
    assert tok.decode(r1.failed()) == "\n<document>search failed, no document found</document>\n"


def test_passage_text_is_scrubbed_of_search_and_document_tags():
    assert scrub_passage("a <document>b</document> <search>c</search> <think>d</think>") == "a b c <think>d</think>"


def test_unknown_protocol_names_the_knob():
    assert get_protocol("search_r1") is SEARCH_R1
    with pytest.raises(ValueError, match=r"Experiment.protocol='r1'.*med_r3.*search_r1"):
        get_protocol("r1")
