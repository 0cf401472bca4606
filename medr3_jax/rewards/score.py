"""`python -m medr3_jax.rewards.score`: score a JSONL file of responses, one JSON line out per line in.

    python -m medr3_jax.rewards.score --in responses.jsonl --stage 3 --protocol med_r3 --judge rules
    python -m medr3_jax.rewards.score --in runs/demo/stage3/rollouts/step_000002.jsonl \\
        --judge http://127.0.0.1:8000/v1 --judge_model Qwen2.5-72B-Instruct
    python -m medr3_jax.rewards.score --in r.jsonl --gin_param "stage3/RewardWeights.graph = 0.0"

Each input line is a JSON object with `id`, `question`, `answer` (the gold text), optional
`options` (letter -> text; the gold must be one of them), `response` (what the policy wrote after
the prompt's final `<think>`, inserted documents included), optional `bad_search` (bool) and
`response_tokens` (int; without it the overlong term sees 0 tokens), optional `retrieved_ids` and
`evidence_ids` (the evidence-recall term), optional `dataset`; other fields are ignored. The
trainer's own `rollouts/step_*.jsonl` lines are read as they are (`question_id`, `text`,
`prefix`, `retrieved`), so logged rollouts can be rescored after a change of weights.

Output, one line per input: `{"id", "reward", "format_ok", "components": {name: value},
"answer_reason"}` (a component without a value, such as the graph term without references, is
null). The stage's weights, rules, response cap and question form come from the bundled
`gin/stage{N}.gin` with `--gin_file`/`--gin_param` on top, as in training. With `--judge
rules` a correct answer gets the rubric's top grade and a wrong one its bottom grade; with a URL
(an OpenAI-compatible base URL; the key from $OPENAI_API_KEY when set) the judge grades in the
authors' form (a JSON object with `reason` and `score`). A malformed line is an error naming the
file and line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any, Iterator, Sequence

from medr3_jax.cli import ArgumentParser, entry_point
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.protocol import PROTOCOLS, THINK_OPEN, get_protocol
from medr3_jax.rewards.judge import Judge
from medr3_jax.rewards.scoring import Outcome, Scored, score_outcomes

log = logging.getLogger("medr3_jax.score")
CHUNK = 256  # lines scored together (one batch of judge requests)


class InputError(ValueError):
    """A malformed input line; the message names the file and line."""


def _field(
    obj: dict[str, Any], where: str, *names: str, kind: type | tuple[type, ...] = str, default: Any = None
) -> Any:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InputError(
                    f"{where}: field {name!r} is {type(value).__name__}, expected {getattr(kind, '__name__', kind)}"
                )
            return value
    if default is None:
        raise InputError(f"{where}: missing field {names[0]!r}")
    return default


def read_line(obj: Any, where: str) -> tuple[str, QARecord, Outcome]:
    """(id, record, outcome) of one input object; InputError naming `where` when malformed."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a JSON object")
    row_id = str(_field(obj, where, "id", "question_id", kind=(str, int)))
    question = _field(obj, where, "question")
    gold = _field(obj, where, "answer")
    options = _field(obj, where, "options", kind=dict, default={})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise InputError(f"{where}: field 'options' must map letters to texts")
    letters = [k for k, v in options.items() if v == gold]
    if options and not letters:
        raise InputError(f"{where}: the gold answer {gold!r} is not one of the options {sorted(options.values())}")
    response = _field(obj, where, "response", "text")
    prefix = _field(obj, where, "prefix", default=THINK_OPEN)
    retrieved = obj.get("retrieved_ids") or [
        r["id"] for r in obj.get("retrieved", []) if isinstance(r, dict) and "id" in r
    ]
    try:
        record = QARecord(id=row_id, dataset=str(obj.get("dataset", "input")), question=question, options=options,
                          answer=letters[0] if letters else "", answer_text=gold,
                          evidence_ids=tuple(str(e) for e in obj.get("evidence_ids", ())))  # fmt: skip
    except DataError as err:
        raise InputError(f"{where}: {err}") from None
    outcome = Outcome(
        prefix + response,
        _field(obj, where, "response_tokens", kind=int, default=0),
        _field(obj, where, "bad_search", kind=bool, default=False),
        tuple(str(r) for r in retrieved),
        question,
    )
    return row_id, record, outcome


def read_jsonl(path: str) -> Iterator[tuple[str, QARecord, Outcome]]:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
            yield read_line(obj, where)


def output_lines(ids: Sequence[str], scored: Scored) -> list[dict[str, Any]]:
    value = lambda x: None if math.isnan(float(x)) else round(float(x), 6)  # noqa: E731
    return [
        {
            "id": row_id,
            "reward": value(scored.totals[i]),
            "format_ok": bool(scored.format_ok[i]),
            "components": {name: value(v[i]) for name, v in scored.components.items()},
            "answer_reason": scored.answer_reasons[i],
        }
        for i, row_id in enumerate(ids)
    ]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.rewards.score", description=__doc__.split("\n")[0])
    p.add_argument("--in", dest="input", required=True, help="JSONL of responses, or a trainer rollouts/step_*.jsonl")
    p.add_argument("--stage", type=int, choices=(1, 2, 3), default=3, help="whose reward (default 3: the authors')")
    p.add_argument(
        "--protocol", choices=sorted(PROTOCOLS), default=None, help="default: the stage's Experiment.protocol"
    )
    p.add_argument("--judge", default="rules", help="'rules' or an OpenAI-compatible base URL (http://host:8000/v1)")
    p.add_argument("--judge_model", default="judge", help="model name sent to the judge endpoint")
    p.add_argument("--gin_file", action="append", default=[], help="repeatable; after the bundled stage file")
    p.add_argument("--gin_param", action="append", default=[], help='repeatable, e.g. "stage3/RewardWeights.graph = 0"')
    args = p.parse_args(argv)
    return args


def _judge(args: argparse.Namespace, configurable: dict) -> Judge | None:
    if args.judge == "rules":
        return None
    if not args.judge.startswith(("http://", "https://")):
        raise ValueError(f"--judge {args.judge!r}: expected 'rules' or an http(s):// base URL")
    return configurable["HTTPJudge"](args.judge, args.judge_model)


def run(args: argparse.Namespace) -> int:
    # The gin wiring of training: the stage file, then the user's files and bindings.
    import gin  # noqa: PLC0415
    from medr3_jax import train  # noqa: PLC0415 (gin and the trainer's configurables, for this CLI only)

    stage = f"stage{args.stage}"
    gin.clear_config()
    error = train.parse_gin([f"gin/{stage}.gin", *args.gin_file], args.gin_param)
    if error:
        raise ValueError(error.removeprefix("error: "))
    exp = train.stage_experiment(stage)
    protocol = get_protocol(args.protocol or exp.protocol, knob="--protocol")
    judge = _judge(args, train._CONFIGURABLE)
    rows = list(read_jsonl(args.input))
    log.info("scoring %d responses from %s: %s reward, protocol %s, judge %s", len(rows), args.input, stage,
             protocol.name, args.judge)  # fmt: skip
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        scored = score_outcomes(
            [o for _, _, o in part], [r for _, r, _ in part], exp.rewards, protocol=protocol,
            retrieval=exp.rollout.retrieval, max_response_tokens=exp.rollout.max_response_tokens,
            rules=exp.reward_rules, letters_shown=exp.prompt.question_form == "choices", judge=judge,
            overlong=exp.overlong,
        )  # fmt: skip
        for line in output_lines([i for i, _, _ in part], scored):
            print(json.dumps(line, ensure_ascii=False))
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # gin probes `include`d names as package resources first and logs each miss (see train.main).
    logging.getLogger().addFilter(lambda record: not record.pathname.endswith("gin/resource_reader.py"))
    return run(_parse(argv))


if __name__ == "__main__":
    sys.exit(main())
