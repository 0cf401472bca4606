"""Teachers: models that write a reference chain for a question, searching our index while they
think, under the med_r3 protocol (the training prompt's tags, one `<search>` per turn, the
passages as `<document>` blocks right after `</search>`).

    teacher = EndpointTeacher(HTTPJudge(url, "deepseek-r1", api="chat", temperature=0.9), retriever)
    teacher = LocalTeacher(model, tokenizer, retriever)          # our RolloutEngine, as in training
    chains = teacher.write(records, questions, seed)             # one chain (or a Failure) each

A chain is the assistant text from `<think>` to `</answer>`, documents included: what a training
rollout's `prefix + text` is. The authors write theirs with DeepSeek-R1 on a chat API, re-asking
with the text so far after each search (`gen_infer_response` in
`data_construction/cot_generation_ds_parallel.py`, GitHub 8023looker/Med-R3); `api="chat"` does
that with their prompts, `api="completions"` continues the training prompt itself.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import TYPE_CHECKING, Protocol, Sequence

from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.data.references.prompts import restart_prompt, teacher_prompt
from medr3_jax.protocol import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    MED_R3,
    SEARCH_CLOSE,
    SEARCH_FAILED_TEXT,
    SEARCH_OPEN,
    THINK_OPEN,
    MalformedSearch,
    parse_search_turn,
    scrub_passage,
)

if TYPE_CHECKING:
    from medr3_jax.models.tokenizers import Tokenizer
    from medr3_jax.models.transformer import Decoder
    from medr3_jax.retrieval.retriever import Retriever
    from medr3_jax.rewards.judge import HTTPJudge

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why no chain came out of one attempt (`reason` is a short key, counted by the builder)."""

    reason: str
    detail: str = ""


class Teacher(Protocol):
    def write(self, records: Sequence[QARecord], questions: Sequence[str], seed: int) -> list[str | Failure]:
        """One chain per record (`questions[i]` is the question as shown), or why not; `seed`
        seeds the batch's sampling where the teacher samples locally."""
        ...


def document_text(retriever: Retriever, query: str, top_k: int) -> str:
    """The med_r3 blocks for one search, as text: each passage (tags scrubbed, as in the passage
    store) in `<document>…</document>`, back to back; the failure notice when the search fails."""
    try:
        ids, _ = retriever.search([query], top_k)
    except Exception as err:  # noqa: BLE001 -- as in training: a failed search gets the notice
        log.warning("retrieval failed for %r (%s: %s); inserting the failure notice", query, type(err).__name__, err)
        return DOCUMENT_OPEN + SEARCH_FAILED_TEXT + DOCUMENT_CLOSE
    return "".join(DOCUMENT_OPEN + scrub_passage(retriever.passage(i).contents) + DOCUMENT_CLOSE for i in ids[0])


class EndpointTeacher:
    """Chains from an OpenAI-compatible server (`rewards.judge.HTTPJudge`; its sampling settings
    are the teacher's: the authors use temperature 0.9 and 7400 tokens for DeepSeek-R1).

    Each turn decodes until `</search>`; the turn's query (exactly one `<search>`, as training's
    `parse_search_turn` reads it) goes to the retriever, `</search>` and the passages are
    appended, and the next turn continues: with api="completions" the training prompt plus the
    text so far is continued; with api="chat" the authors' restart prompt carries the text so
    far. Unlike theirs, the text so far accumulates over turns (theirs keeps only the last
    turn's text). A chain that writes `<document>` itself, searches more than `max_searches`
    times, or never closes `</answer>` is a failure.
    """

    def __init__(self, client: HTTPJudge, retriever: Retriever, *, top_k: int = 3, max_searches: int = 4,
                 max_tokens: int = 7400, workers: int = 8):  # fmt: skip
        self.client, self.retriever = client, retriever
        self.top_k, self.max_searches, self.max_tokens, self.workers = top_k, max_searches, max_tokens, workers

    def write(self, records: Sequence[QARecord], questions: Sequence[str], seed: int) -> list[str | Failure]:
        del seed  # a server samples with its own randomness
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(records)))) as pool:
            return list(pool.map(self._chain, questions))

    def _chain(self, question: str) -> str | Failure:
        completions = self.client.api == "completions"
        base = MED_R3.raw_prompt(MED_R3.prompt_body(question, options={}, context="", retrieval=True,
                                                    max_searches=self.max_searches))  # fmt: skip
        text = THINK_OPEN if completions else ""  # the chain so far (completions: the prompt's <think> opens it)
        budget = self.max_tokens
        for turn in range(self.max_searches + 1):
            if completions:
                prompt = base + text[len(THINK_OPEN) :]
            else:
                prompt = teacher_prompt(question) if turn == 0 else restart_prompt(question, text)
            reply = self.client.generate(prompt, stop=(SEARCH_CLOSE,), max_tokens=budget)
            if reply is None:
                return Failure("teacher_failed", "the request failed after retries")
            if DOCUMENT_OPEN in reply.text or DOCUMENT_CLOSE in reply.text:
                return Failure("wrote_document", "the teacher wrote a <document> tag itself")
            searching = reply.finish_reason == "stop" and SEARCH_OPEN in reply.text.rsplit(SEARCH_CLOSE, 1)[-1]
            if not searching:
                if reply.finish_reason == "length":
                    return Failure("length", f"no </answer> within {self.max_tokens} tokens")
                return text + reply.text
            if turn == self.max_searches:
                return Failure("search_cap", f"more than {self.max_searches} searches")
            try:
                query = parse_search_turn(reply.text + SEARCH_CLOSE)
            except MalformedSearch as err:
                return Failure("bad_search", str(err))
            text += reply.text + SEARCH_CLOSE + document_text(self.retriever, query, self.top_k)
            budget = max(budget - reply.tokens, 1)  # the authors' `cur_max_tokens -= completion_tokens`
        raise AssertionError("unreachable: the last turn returns")


class LocalTeacher:
    """Chains from one of our checkpoints through the training rollout (`RolloutEngine`, one
    sample per question, the training prompt in its open form), so that a reference is
    written exactly as a rollout would be. A row flagged by the rollout (bad search, search cap,
    length, failed retrieval, ...) is a failure named by its flag."""

    def __init__(self, model: Decoder, tokenizer: Tokenizer, retriever: Retriever, *, top_k: int = 3,
                 max_searches: int = 4, max_tokens: int = 2048, temperature: float = 0.9, top_p: float = 1.0,
                 chat: bool = False):  # fmt: skip
        from medr3_jax.rollout import RolloutConfig, RolloutEngine  # noqa: PLC0415
        from medr3_jax.sampling import Sampler, SamplingParams  # noqa: PLC0415

        self.tokenizer = tokenizer
        self.style = PromptStyle(mode="search", chat=chat, question_form="open")
        self.max_searches = max_searches
        sampler = Sampler(model, tokenizer, stop_strings=MED_R3.stop_strings(retrieval=True), max_new_tokens=max_tokens)
        config = RolloutConfig(group_size=1, max_searches=max_searches, top_k=top_k, max_response_tokens=max_tokens)
        self.engine = RolloutEngine(sampler, retriever, config, MED_R3)
        self.params = SamplingParams(temperature=temperature, top_p=top_p)

    def write(self, records: Sequence[QARecord], questions: Sequence[str], seed: int) -> list[str | Failure]:
        del questions  # the prompt is rendered from the record, as in training
        prompts = [
            self.tokenizer.encode(
                render_prompt(r, self.style, self.tokenizer, protocol=MED_R3, max_searches=self.max_searches)
            )  # fmt: skip
            for r in records
        ]
        rollout = self.engine.run(prompts, params=self.params, seed=seed)
        out: list[str | Failure] = []
        for i in range(len(records)):
            flags = sorted(rollout.flags[i])
            if flags:
                out.append(Failure(flags[0], f"the rollout row was flagged {', '.join(flags)}"))
            else:
                out.append(rollout.prefixes[i] + rollout.texts[i])
        return out
