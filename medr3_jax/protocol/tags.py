"""The strings of the Med-R3 trajectory protocol (the authors' verl fork, GitHub
8023looker/Med-R3): the tags the policy writes, the stop strings of a searching rollout, the
end-of-text strings removed before a format check, and the retrieval failure notice."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
DOCUMENT_OPEN, DOCUMENT_CLOSE = "<document>", "</document>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS: tuple[str, ...] = (
    THINK_OPEN, THINK_CLOSE, SEARCH_OPEN, SEARCH_CLOSE, DOCUMENT_OPEN, DOCUMENT_CLOSE, ANSWER_OPEN, ANSWER_CLOSE
)  # fmt: skip

# A searching rollout stops on these (kept in the output), as the authors' rollout does
# (`vllm_rollout_retrieval_spmd.py`); `<document>` written by the policy itself is a bad search.
STOP_STRINGS: tuple[str, ...] = (SEARCH_CLOSE, DOCUMENT_OPEN, DOCUMENT_CLOSE)

# Removed from a response before its format is checked (`format_reward.py` `score_think_pattern`).
END_OF_TEXT: tuple[str, ...] = ("</s>", "<|im_end|>", "<|endoftext|>", "<|end_of_sentence|>")

# The block inserted when a search fails or times out (`vllm_rollout_retrieval_spmd.py`).
SEARCH_FAILED_TEXT = "search failed, no document found"

# Tags removed from retrieved passage text before it is inserted (`search_utils.py` `search`).
PASSAGE_SCRUBBED: tuple[str, ...] = (SEARCH_OPEN, SEARCH_CLOSE, DOCUMENT_OPEN, DOCUMENT_CLOSE)


def scrub_passage(text: str) -> str:
    """Passage text without the search and document tags (so a retrieved passage can never
    close the document block it sits in, nor open a search)."""
    for tag in PASSAGE_SCRUBBED:
        text = text.replace(tag, "")
    return text
