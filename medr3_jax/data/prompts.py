"""Prompts: the Med-R3 search prompt, its retrieval-free variant (stage 1), and the MIRAGE-style
multiple-choice evaluation prompt; raw text or rendered with the policy's chat template.

    style = PromptStyle(mode="search", chat=True)
    text = render_prompt(record, style, tokenizer)   # ends with "<think>": the policy continues

The Med-R3 prompts end in `<think>` so that the first sampled token is already reasoning (the
authors' protocol); with a chat template, `<think>` opens the assistant turn.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from medr3_jax.data.records import QARecord
from medr3_jax.models.tokenizers import THINK_OPEN, Tokenizer

PromptMode = Literal["search", "reason", "mc_eval"]

_REASON = "Answer the given medical question. Reason step by step inside <think> and </think> before answering."
_SEARCH = (
    " Whenever you find that you lack medical knowledge, close your reasoning with </think> and "
    "search a medical corpus by writing <search> your query </search>; the most relevant passages "
    "are then returned to you, each inside <document> and </document>, and you continue with new "
    "reasoning inside <think> and </think>. Write one query per search and never write <document> "
    "yourself. You may search up to {max_searches} times."
)
_FINAL_CHOICE = (
    " When you have enough information, give the final answer inside <answer> and </answer>: the "
    "letter of the correct option followed by its text, for example <answer> B. Metformin </answer>."
)
_FINAL_OPEN = (
    " When you have enough information, give the final answer inside <answer> and </answer>, in a "
    "few words, for example <answer> Acute intermittent porphyria </answer>."
)

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

    mode: "search" (Med-R3, stages 2-3), "reason" (no retrieval, stage 1) or "mc_eval".
    chat: render with the tokenizer's chat template (instruct models) rather than raw text.
    show_context: include the record's supplied context (PubMedQA abstracts) before the question.
    max_searches: the search budget stated in the prompt (the rollout enforces it).
    """

    mode: PromptMode = "search"
    chat: bool = True
    show_context: bool = False
    max_searches: int = 4

    def __post_init__(self) -> None:
        if self.mode not in ("search", "reason", "mc_eval"):
            raise ValueError(f"PromptStyle.mode={self.mode!r}: expected 'search', 'reason' or 'mc_eval'")
        if self.max_searches < 1:
            raise ValueError(f"PromptStyle.max_searches={self.max_searches}: must be >= 1")


def format_options(options: dict[str, str] | object) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in dict(options).items())


def question_block(record: QARecord, show_context: bool) -> str:
    """'Context: ...' (optional), 'Question: ...' and 'Options:' lines."""
    parts = []
    if show_context and record.context:
        parts.append(f"Context: {record.context}")
    parts.append(f"Question: {record.question}")
    if record.is_multiple_choice:
        parts.append("Options:\n" + format_options(record.options))
    return "\n".join(parts)


def instructions(record: QARecord, style: PromptStyle) -> str:
    text = _REASON
    if style.mode == "search":
        text += _SEARCH.format(max_searches=style.max_searches)
    return text + (_FINAL_CHOICE if record.is_multiple_choice else _FINAL_OPEN)


def render_prompt(record: QARecord, style: PromptStyle, tokenizer: Tokenizer | None = None) -> str:
    """The prompt text for `record`. Med-R3 modes end with `<think>`; `chat=True` needs a
    tokenizer with a chat template."""
    if style.mode == "mc_eval":
        if not record.is_multiple_choice:
            raise ValueError(f"record {record.id!r} has no options: the mc_eval prompt needs a multiple-choice record")
        user = MC_EVAL_USER.format(question=record.question, options=format_options(record.options))
        if style.show_context and record.context:
            user = f"Context:\n{record.context}\n\n{user}"
        if style.chat:
            return _chat(tokenizer, [{"role": "system", "content": MC_EVAL_SYSTEM}, {"role": "user", "content": user}])
        return f"{MC_EVAL_SYSTEM}\n\n{user}\n"
    body = f"{instructions(record, style)}\n\n{question_block(record, style.show_context)}"
    if style.chat:
        return _chat(tokenizer, [{"role": "user", "content": body}]) + THINK_OPEN
    return f"{body}\n{THINK_OPEN}"


def _chat(tokenizer: Tokenizer | None, messages: list[dict[str, str]]) -> str:
    if tokenizer is None or tokenizer.chat_template is None:
        raise ValueError("PromptStyle(chat=True) needs a tokenizer with a chat template; pass one or set chat=False")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
