"""The authors' reward rules, re-written from their code as the tests' reference (GitHub
8023looker/Med-R3; each function names the file and function it follows). Written plainly from
their logic, defects included (each one marked), so that a test can show where we follow them
and where we implement their evident intent instead.
"""

from __future__ import annotations

import math
import re

EOS_STRINGS = ("</s>", "<|im_end|>", "<|endoftext|>", "<|end_of_sentence|>")


def score_think_pattern(s: str, think_in_prompt: bool, answer_tag_in_prompt: bool = True, soft: float = 0.0) -> float:
    """`my_reward/auxiliary/format_reward.py` `score_think_pattern` (not_need_think_at_start =
    think_in_prompt, not_need_answer_tag = not answer_tag_in_prompt)."""
    for eos in EOS_STRINGS:
        s = s.replace(eos, "")
    s = s.strip()
    if think_in_prompt:
        s = "<think>" + s
    end = s.rfind("</think>")
    if end == -1:
        return 0.0
    if "<answer>" in s[:end] or "</answer>" in s[:end]:
        return 0.0
    rest = s[end + len("</think>") :].strip()
    if not rest.replace("<answer>", "").replace("</answer>", "").strip():
        return 0.0
    if not s.startswith("<think>"):
        return soft
    if s.count("<think>") != 1 or s.count("</think>") != 1:
        return soft
    if answer_tag_in_prompt:
        if rest.count("<answer>") != 1 or rest.count("</answer>") != 1:
            return soft
        if rest[rest.rfind("</answer>") + len("</answer>") :].strip():
            return soft
        # DEFECT (theirs): an index found in `rest` slices the whole string `s`.
        if s[end + len("</think>") : rest.find("<answer>")].strip():
            return soft
    return 1.0


def clean_search_pattern(s: str) -> str:
    """`format_reward.py` `clean_search_pattern`."""
    for opener, closer in (("<search>", "</search>"), ("<document>", "</document>")):
        while True:
            i, j = s.find(opener), s.find(closer)
            if i != -1 and j != -1 and i < j:
                s = s[:i] + s[j + len(closer) :]
            else:
                break
    for tag in ("<search>", "</search>", "<document>", "</document>"):
        s = s.replace(tag, "")
    return s.strip()


def get_think_and_answer(s: str) -> tuple[str, str]:
    """`format_reward.py` `get_think_and_answer` (clean_search=True)."""
    think, answer = "", ""
    if s.startswith("<think>"):
        s = s[len("<think>") :]
    if "</think>" in s:
        think = s[: s.rfind("</think>")]
        answer = s[s.rfind("</think>") + len("</think>") :]
    else:
        answer = s
    if "<answer>" in answer:
        answer = answer[answer.find("<answer>") + len("<answer>") :]
    if "</answer>" in answer:
        answer = answer[: answer.rfind("</answer>")]
    return clean_search_pattern(think).strip(), clean_search_pattern(answer).strip()


def language_consistency(question: str, text: str, chunk: int = 200) -> float:
    """`my_reward/auxiliary/language_reward.py` `score_language_consistency`."""
    zh = re.compile("[\u4e00-\u9fa5]+")
    want = bool(zh.search(question))
    flags = [bool(zh.search(text[i : i + chunk])) for i in range(0, len(text), chunk)]
    return flags.count(want) / len(flags) if flags else 0.0


def add_penalty(reward: float, response: str, question: str) -> float:
    """`contrib/base_with_api.py` `RewardActorBaseWithApi.add_penalty` (format, think length,
    language), with the prompt ending in `<think>` and holding `<answer>`."""
    reward -= (1.0 - score_think_pattern(response, True)) * 0.1
    think, answer = get_think_and_answer(response)
    s = 0.0
    if answer:
        s = (1.0 - math.exp(-min(len(think) / len(answer), 2))) / 0.8646647167
    reward -= (1.0 - s) / 10.0
    reward -= (1.0 - language_consistency(question, think)) / 10.0
    reward -= (1.0 - language_consistency(question, answer)) / 10.0
    return reward


def normalize_reward(score: float) -> float:
    """`contrib/med_reasoning_logical.py` `RewardActorMedReasoningLogical.normalize_reward`."""
    return 1.0 if score >= 2.0 else (0.4 if score >= 1.0 else 0.1)


def compute_score(response: str, question: str, judge_score: float | None, graph_score: float | None) -> float:
    """`med_reasoning_logical.py` `RewardActorMedReasoningLogical.compute_score`: `judge_score`
    is the judge's reply score (None: its three tries failed), `graph_score` the best
    reasoning-graph score over the references (None: no references)."""
    if score_think_pattern(response, True) == 0.0:
        reward = 0.1
    elif judge_score is None:
        reward = 0.1
    else:
        reward = normalize_reward(judge_score)
        reward = max(reward + 0.8 * (graph_score or 0.0), 0.0)
    return add_penalty(reward, response, question)


def manager_reward(response: str, question: str, judge_score: float | None, graph_score: float | None,
                   bad_search: bool, length: int, max_length: int, buffer: int) -> float:  # fmt: skip
    """`reward_manager/diagnosis_with_search.py` `DiagnosisWithSearchRewardManager`: a bad
    search replaces the score with -0.1; the overlong term is added to every row. DEFECT
    (theirs, unreachable there since the rollout truncates at max_length): no lower bound."""
    score = -0.1 if bad_search else compute_score(response, question, judge_score, graph_score)
    exceed = length - (max_length - buffer)
    return score + min(-exceed / buffer, 0.0)


# ---- the reasoning-graph score (`contrib/med_reasoning_logical.py`) -------------------------------
def graph_logical_score(g1: list, g2: list) -> float:
    """`graph_logical_score`: Jaccard of the multi-hop paths from root nodes, with per-path
    visited flags on copies of the adjacency lists."""
    import copy  # noqa: PLC0415

    def graph_dict(g):
        out: dict = {}
        for item in g:
            out.setdefault(item[0], []).append(list(item) + [False])
        return out

    def start_nodes(g):
        return {item[0] for item in g} - {item[2] for item in g}  # their isolated-edge pruning never fires

    def next_node(gd, start):
        if start not in gd:
            return None, gd, None
        for idx, relation in enumerate(gd[start]):
            if relation[-1] is False:
                gd[start][idx][-1] = True
                return relation[2], gd, gd[start][idx]
        return None, gd, None

    def paths(gd, g):
        total = []
        for entity in start_nodes(g):
            hops = {1: [[p[0], p[1], p[2]] for p in gd[entity]]}
            info = {}
            for idx, item in enumerate(gd[entity]):
                item_dict = copy.deepcopy(gd)
                item_dict[entity][idx][-1] = True
                info[item[2]] = {"prev": [item[0], item[1], item[2]], "g": item_dict}
            length = 1
            while info:
                length += 1
                nxt = {}
                hops[length] = []
                for node in info:
                    entity2, item_dict, relation = next_node(info[node]["g"], node)
                    if entity2 is not None:
                        nxt[entity2] = {"prev": info[node]["prev"] + [relation[1], relation[2]], "g": item_dict}
                        hops[length].append(nxt[entity2]["prev"])
                info = copy.deepcopy(nxt)
            for hop in hops.values():
                total += hop
        return {tuple(p) for p in total}

    p1, p2 = paths(graph_dict(g1), g1), paths(graph_dict(g2), g2)
    return len(p1 & p2) / len(p1 | p2) if p1 | p2 else 0.0


def graph_statistic_score(g1: list, g2: list) -> float:
    """`graph_statistic_score`: Jaccard of heads and tails."""
    s1 = {i[0] for i in g1} | {i[2] for i in g1}
    s2 = {i[0] for i in g2} | {i[2] for i in g2}
    common = s1 & s2
    return len(common) / len(s1 | s2) if common else 0.0


def graph_semantic_score(e1, e2) -> float:
    """`graph_semantic_score`: the cosine, unclipped."""
    import numpy as np  # noqa: PLC0415

    n = np.linalg.norm(e1) * np.linalg.norm(e2)
    return float(np.dot(e1, e2) / n) if n > 0 else 0.0


def normalize_reasoning_reward(g1, e1, g2, e2) -> float:
    """`normalize_reasoning_reward`: the mean of the three, each 0 when it raises."""
    scores = []
    terms = ((graph_logical_score, (g1, g2)), (graph_semantic_score, (e1, e2)), (graph_statistic_score, (g1, g2)))
    for fn, args in terms:
        try:
            scores.append(fn(*args))
        except Exception:  # noqa: BLE001 -- theirs catches everything
            scores.append(0.0)
    return sum(scores) / 3.0


# ---- reference building (`data_construction/` in their repository) --------------------------
def judge_true_false_by_score(result) -> bool:
    """`data_construction/utils_func.py` `judge_true_false_by_score`: an int score >= 5 passes."""
    if isinstance(result, dict):
        if "score" in result:
            if isinstance(result["score"], int):
                score = result["score"]
                if score >= 5:
                    return True
    return False


def verify_reply(content: str) -> dict:
    """`verify_correctness` in `data_construction/cot_generation_ds_parallel.py`: how they read
    the grader's reply (require_json=True)."""
    import json  # noqa: PLC0415

    try:
        return json.loads(content.strip("```json`"))
    except json.JSONDecodeError:
        return {"score": 0, "reason": "JSONDecodeError"}


def misleading_options(options: dict, label: str) -> str:
    """Their `misleading_options` argument in `verify_correctness`."""
    return "\n".join([f"[{j+1}]: {v}" for j, (k, v) in enumerate(options.items()) if k != label])


# `_VERIFY_PROMPT_EN` and `_VERIFY_PROMPT_RAREARENA_EN` of `data_construction/prompts.py`, as
# they are written there (ours assembles the two from shared pieces).
VERIFY_PROMPT_EN = """You will be given a question, a student's answer, the correct and unique answer to the question, and other misleading options.
Please compare the student's answer with the correct answer and analyze whether the student's answer is correct.
In the student's answer, the <think>...</think> tag wraps the thinking process, and the <answer>...</answer> tag wraps the final answer.
During the model's reasoning process, uncertain parts are encapsulated using the <search> search query </search> tags to facilitate subsequent information retrieval. Once relevant content is retrieved, the model continues its reasoning based on the retrieved information.
It is important to note that the content within <document> search results </document> represents externally retrieved information and is not generated by the model itself. Therefore, this content should not be used to assess the model's logical reasoning ability. Instead, it should be used solely to evaluate the model's capability to process and integrate external information.

Please judge the student's thinking process and answer based on the correct answer, rate it from 1 to 5 points, and explain the reason.
5-point answer criteria:
1. The thinking process is logical and seamless, and the reasoning process is specific and clear.
2. The final answer is consistent with the correct answer, allowing synonyms, abbreviations, etc. of the correct answer, but cannot contain incorrect options.
3-4 point answer criteria:
1. The thinking process is reasonable.
2. The final answer is consistent with the correct answer, allowing some supplements, as long as they do not conflict with the correct answer, and the correct answer is the main one, not other misleading options.
1-2 point answer criteria:
1. The thinking process is not clear.
2. The final answer is inconsistent with the correct answer or contains incorrect options.
3. Contains garbled characters, format errors, disorder, and irrelevant information.

Please return in the following json format
```json
{{
    "score": xxx,
    "reason": "..."
}}

### Question:
{question}
### Student's Answer:
{answer}
### Correct Answer:
{correct_answer}
### Misleading Options:
{misleading_options}

### Judgment Result:
"""

VERIFY_PROMPT_RAREARENA_EN = """You will be given a question, a student's answer, the correct and unique answer to the question.
Please compare the student's answer with the correct answer and analyze whether the student's answer is correct.
In the student's answer, the <think>...</think> tag wraps the thinking process, and the <answer>...</answer> tag wraps the final answer.
During the model's reasoning process, uncertain parts are encapsulated using the <search> search query </search> tags to facilitate subsequent information retrieval. Once relevant content is retrieved, the model continues its reasoning based on the retrieved information.
It is important to note that the content within <document> search results </document> represents externally retrieved information and is not generated by the model itself. Therefore, this content should not be used to assess the model's logical reasoning ability. Instead, it should be used solely to evaluate the model's capability to process and integrate external information.

Please judge the student's thinking process and answer based on the correct answer, rate it from 1 to 5 points, and explain the reason.
5-point answer criteria:
1. The thinking process is logical and seamless, and the reasoning process is specific and clear.
2. The final answer is consistent with the correct answer, allowing synonyms, abbreviations, etc. of the correct answer.
3-4 point answer criteria:
1. The thinking process is reasonable.
2. The final answer is consistent with the correct answer, allowing some supplements, as long as they do not conflict with the correct answer, and the correct answer is the main one.
1-2 point answer criteria:
1. The thinking process is not clear.
2. The final answer is inconsistent with the correct answer.
3. Contains garbled characters, format errors, disorder, and irrelevant information.

Please return in the following json format
```json
{{
    "score": xxx,
    "reason": "..."
}}

### Question:
{question}
### Student's Answer:
{answer}
### Correct Answer:
{correct_answer}

### Judgment Result:
"""

# `_ANSWER_WITH_THINK_PROMPT_EN` and `_ANSWER_WITH_THINK_PROMPT_EN_RESTART` (their trailing spaces kept).
_TEACHER_HEAD = (
    "You are a medical expert.  \n"
    "Given a question, you should answer it by first thinking about the reasoning process in the mind and then providing the final answer. \n"
    "Please answer the question in the format of <think>...</think><answer>...</answer>. \n"
    "That is, <think>Here is the reasoning process</think><answer>Here is the answer</answer>. \n"
    "You should perform thinking with decomposing, reflecting, brainstorming, verifying, refining, and revising. \n"
    "Besides, you can perform searching for uncertain knowledge if necessary with the format of <search> search query </search> during your thinking process.\n"
    "Then, the search system will provide you with the retrieval information with the format of <document> search results </document>.\n"
    "The answer needs to summarize the reasoning process and give the final answer.\n"
)
ANSWER_WITH_THINK_PROMPT_EN = _TEACHER_HEAD + "\nQuesion: {question}\nResponse:\n"
ANSWER_WITH_THINK_PROMPT_EN_RESTART = (
    _TEACHER_HEAD
    + "You are required to continue your reasoning and response in conjunction with the existing answer and retrieved information, ensuring that the subsequent answers you generate maintain coherence with the previously generated answers.\n"
    "\nQuestion: {question} \nExisting Answer and Retrieved Information: {existing_answer} \nResponse:\n"
)
