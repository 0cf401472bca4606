"""Prompt templates of the two protocols: the instructions and the question, without the
chat template (data/prompts.py renders a record with one of these, raw or as a chat turn).

med_r3 is the authors' `R1_ORIGIN_PROMPT_ADD_LANGUAGE_AND_SEARCH` (`myverl/prompt.py` in
GitHub 8023looker/Med-R3) character for character, their "Quesion" spelling included: it is
what their policies were trained on. Without retrieval the two search sentences are left out
(our reading: the authors have no retrieval-free stage).
"""

from __future__ import annotations

from typing import Mapping

MED_R3_HEAD = (
    "You are a medical expert.  \n"
    "Given a question, you should answer it by first thinking about the reasoning process in the mind and then "
    "providing the final answer. \n"
    "Please answer the question in the format of <think>...</think><answer>...</answer>. \n"
    "That is, <think>Here is the reasoning process</think><answer>Here is the answer</answer>. \n"
    "You should perform thinking with decomposing, reflecting, brainstorming, verifying, refining, and revising. \n"
)
MED_R3_SEARCH = (
    "Besides, you can perform searching for uncertain knowledge if necessary with the format of "
    "<search> search query </search> during your thinking process.\n"
    "Then, the search system will provide you with the retrieval information with the format of "
    "<document> search results </document>.\n"
)
MED_R3_TAIL = "Think and answer with the same language as the question.\n\nQuesion: "
MED_R3_CUE = "\nResponse: "  # raw prompts: the model continues after "Response: <think>"

SEARCH_R1_REASON = (
    "Answer the given medical question. Reason step by step inside <think> and </think> before answering."
)
SEARCH_R1_SEARCH = (
    " Whenever you find that you lack medical knowledge, close your reasoning with </think> and "
    "search a medical corpus by writing <search> your query </search>; the most relevant passages "
    "are then returned to you, each inside <document> and </document>, and you continue with new "
    "reasoning inside <think> and </think>. Write one query per search and never write <document> "
    "yourself. You may search up to {max_searches} times."
)
SEARCH_R1_FINAL_CHOICE = (
    " When you have enough information, give the final answer inside <answer> and </answer>: the "
    "letter of the correct option followed by its text, for example <answer> B. Metformin </answer>."
)
SEARCH_R1_FINAL_OPEN = (
    " When you have enough information, give the final answer inside <answer> and </answer>, in a "
    "few words, for example <answer> Acute intermittent porphyria </answer>."
)
SEARCH_R1_CUE = "\n"


def options_lines(options: Mapping[str, str]) -> str:
    """'A. text' lines, in letter order."""
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def med_r3_body(question: str, *, options: Mapping[str, str], context: str, retrieval: bool, max_searches: int) -> str:
    """The authors' instructions and question (options and context only when given)."""
    del max_searches  # their prompt states no budget; the rollout enforces it
    text = question if not options else f"{question}\nOptions:\n{options_lines(options)}"
    if context:
        text = f"Context: {context}\n{text}"
    return MED_R3_HEAD + (MED_R3_SEARCH if retrieval else "") + MED_R3_TAIL + text


def search_r1_body(
    question: str, *, options: Mapping[str, str], context: str, retrieval: bool, max_searches: int
) -> str:
    """Search-R1-style instructions (search budget stated), then Context/Question/Options lines."""
    head = SEARCH_R1_REASON + (SEARCH_R1_SEARCH.format(max_searches=max_searches) if retrieval else "")
    head += SEARCH_R1_FINAL_CHOICE if options else SEARCH_R1_FINAL_OPEN
    lines = [f"Context: {context}"] if context else []
    lines.append(f"Question: {question}")
    if options:
        lines.append("Options:\n" + options_lines(options))
    return head + "\n\n" + "\n".join(lines)
