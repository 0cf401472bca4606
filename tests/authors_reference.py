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
