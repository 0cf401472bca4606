"""Prompts: a record rendered under a protocol (`medr3_jax.protocol`: med_r3 or search_r1),
with or without retrieval, raw text or as a chat turn; and the MIRAGE-style multiple-choice
evaluation prompt.

    style = PromptStyle(mode="search", chat=False, question_form="open")
    text = render_prompt(record, style, tokenizer, protocol=MED_R3, max_searches=4)   # ends with "<think>"

Med-R3 prompts end in `<think>` so that the first sampled token is already reasoning (the
authors' protocol); with a chat template, `<think>` opens the assistant turn. Raw text is what
the authors train base checkpoints on (Qwen2.5-7B base); chat suits instruct checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from medr3_jax.config_types import check_field_types
from medr3_jax.data.records import QARecord
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.protocol import MED_R3, THINK_OPEN, Protocol
from medr3_jax.protocol.prompts import options_lines

PromptMode = Literal["search", "reason", "mc_eval"]
QuestionForm = Literal["open", "choices"]

# The multiple-choice evaluation prompt asks for MIRAGE's JSON output, so that MIRAGE's own
# letter extraction (`answers.mirage_answer`) reads it.
MC_EVAL_SYSTEM = (
    "You are a medical expert answering a multiple-choice medical question. Think it through step "
    "by step, then choose one of the given options. Reply with a JSON object of the form "
    '{"step_by_step_thinking": "<your reasoning>", "answer_choice": "<the option letter>"} and '
    "nothing else. Always commit to one answer."
)
MC_EVAL_USER = "Question:\n{question}\n\nOptions:\n{options}\n\nThink step by step and reply with the JSON object:"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PromptStyle:
    """How a record becomes a prompt.

    mode: "search" (retrieval on, stages 2-3), "reason" (no retrieval, stage 1) or "mc_eval".
    chat: render with the tokenizer's chat template (instruct models) rather than raw text
      (base models, as the authors train).
    question_form: "open" (the authors' form: the question without its options, graded against
      the gold option's text; `data_preprocess/medqa_cot_multi.py` in GitHub 8023looker/Med-R3)
      or "choices" (lettered options shown). mc_eval always shows the options.
    show_context: include the record's supplied context (PubMedQA abstracts) before the question.
    """

    mode: PromptMode = "search"
    chat: bool = True
    question_form: QuestionForm = "open"
    show_context: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.mode not in ("search", "reason", "mc_eval"):
            raise ValueError(f"PromptStyle.mode={self.mode!r}: expected 'search', 'reason' or 'mc_eval'")
        if self.question_form not in ("open", "choices"):
            raise ValueError(f"PromptStyle.question_form={self.question_form!r}: expected 'open' or 'choices'")


def shown_question(record: QARecord, form: QuestionForm) -> tuple[str, dict[str, str]]:
    """(question text, options shown). The open form drops the options and uses the record's
    option-free wording when the release has one (`open_question`), else its question as is;
    the authors rewrite multiple-choice stems with an LLM first (that step is not ours)."""
    if form == "open" or not record.is_multiple_choice:
        return record.open_question or record.question, {}
    return record.question, dict(record.options)


def render_prompt(
    record: QARecord,
    style: PromptStyle,
    tokenizer: Tokenizer | None = None,
    *,
    protocol: Protocol = MED_R3,
    max_searches: int = 4,
) -> str:
    """The prompt text for `record`. Med-R3 modes end with `<think>`; `chat=True` needs a
    tokenizer with a chat template. `max_searches` is the rollout's budget (search_r1 states it)."""
    if style.mode == "mc_eval":
        return _mc_eval_prompt(record, style, tokenizer)
    question, options = shown_question(record, style.question_form)
    context = record.context if style.show_context else ""
    body = protocol.prompt_body(
        question, options=options, context=context, retrieval=style.mode == "search", max_searches=max_searches
    )
    if style.chat:
        return _chat(tokenizer, [{"role": "user", "content": body}]) + THINK_OPEN
    return protocol.raw_prompt(body)


def _mc_eval_prompt(record: QARecord, style: PromptStyle, tokenizer: Tokenizer | None) -> str:
    if not record.is_multiple_choice:
        raise ValueError(f"record {record.id!r} has no options: the mc_eval prompt needs a multiple-choice record")
    user = MC_EVAL_USER.format(question=record.question, options=options_lines(record.options))
    if style.show_context and record.context:
        user = f"Context:\n{record.context}\n\n{user}"
    if style.chat:
        return _chat(tokenizer, [{"role": "system", "content": MC_EVAL_SYSTEM}, {"role": "user", "content": user}])
    return f"{MC_EVAL_SYSTEM}\n\n{user}\n"


def _chat(tokenizer: Tokenizer | None, messages: list[dict[str, str]]) -> str:
    if tokenizer is None or tokenizer.chat_template is None:
        raise ValueError("PromptStyle(chat=True) needs a tokenizer with a chat template; pass one or set chat=False")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
