"""One stage's configuration (`Experiment`, frozen and checked at construction) and the rules for
its remote inputs: what gin binds and the trainer, planner and CLIs read."""

from __future__ import annotations

import dataclasses

from medr3_jax import protocol as P
from medr3_jax.config_types import check_field_types
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.evaluation.rollouts import EvalSettings
from medr3_jax.remote import is_remote, stage
from medr3_jax.rewards import Judge, OverlongConfig, RewardRules, RewardWeights
from medr3_jax.rl import ESTIMATORS
from medr3_jax.rollout import RolloutConfig
from medr3_jax.sampling import SamplingParams
from medr3_jax.trainer.checkpoints import CheckpointConfig
from medr3_jax.trainer.step import OptimizerConfig, UpdateConfig

# init_from="auto": a stage starts from the final checkpoint of the nearest earlier stage that ran
# under the same workdir (stage3 <- stage2 <- stage1 <- stage0, the optional cold start).
PREVIOUS_STAGE = {"stage1": "stage0", "stage2": "stage1", "stage3": "stage2"}
OBJECTIVES = ("rl", "sft")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """Everything one stage needs. Defaults: the bundled demo (SmolLM2-135M-Instruct, the
    sample questions and corpus, MiniLM exact retrieval, a few small steps on CPU)."""

    stage: str = "stage3"
    # "rl": rollouts, rewards and policy-gradient updates (stages 1-3); "sft": supervised
    # fine-tuning on the reference chains (`references`), the cold start of stage 0 (trainer.sft)
    objective: str = "rl"
    model: str = "smollm2_135m_instruct"  # preset with bundled weights, HF dir or .gguf
    init_from: str = "auto"  # "auto" (the nearest earlier stage under the workdir), "base", or a checkpoint dir
    train_data: tuple[str, ...] = ("medqa:train", "medmcqa:train", "pubmedqa:train")  # "name[/config]:split"
    data_dir: str | None = None  # prepared TFDS data; None = the bundled sample set
    index_dir: str | None = None  # retrieval index (retrieval.embed); None = the bundled sample corpus
    retrieval_backend: str = "exact"
    num_steps: int = 3
    prompts_per_step: int = 2  # questions per step; rows = prompts_per_step x rollout.group_size
    prompt_buckets: tuple[int, ...] = (256, 512, 1024, 2048)
    seed: int = 0
    mesh: str = "data=1,fsdp=-1,tensor=1"
    param_dtype: str | None = None  # default: float32 on CPU, bfloat16 on accelerators
    cache_attention: str | None = None  # ModelConfig.cache_attention; default: blockwise on CPU, dense elsewhere
    protocol: str = "med_r3"  # medr3_jax.protocol: "med_r3" (the authors') or "search_r1"
    sampling: SamplingParams = SamplingParams(temperature=1.0)
    prompt: PromptStyle = PromptStyle(mode="search")
    rollout: RolloutConfig = RolloutConfig(group_size=4, max_response_tokens=192, decode_segment=64, sequence_bucket=64)
    rewards: RewardWeights = RewardWeights()
    reward_rules: RewardRules = RewardRules()
    overlong: OverlongConfig = OverlongConfig()
    advantage_estimator: str = "grpo"  # rl.group_advantages: "grpo" (the authors'), "drgrpo" or "rloo"
    optimizer: OptimizerConfig = OptimizerConfig()
    update: UpdateConfig = UpdateConfig(micro_batch=2)
    checkpoint: CheckpointConfig = CheckpointConfig(every_steps=2, keep=2)
    judge: Judge | None = None
    # Reference reasoning records for the graph term (data.references): "auto" = the `references/`
    # folder in data_dir that `python -m medr3_jax.data.references` writes (the bundled sample's own
    # when data_dir is None), a .jsonl file or folder of them, or None (off).
    references: str | None = "auto"
    audit_every: int = 1
    # Evaluation during training (trainer.periodic_eval): eval_data's questions ("name[/config]:
    # split", held out from train_data) on this stage's rollout path every eval_every steps and
    # after the last (0 = off, as the authors run: test_freq=-1), and before the first step with
    # eval_before_train; eval_questions: the first N of each split (None = all).
    eval_data: tuple[str, ...] = ()
    eval_every: int = 0
    eval_before_train: bool = True
    eval_questions: int | None = None
    eval: EvalSettings = EvalSettings()

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"{self.stage}: Experiment.objective={self.objective!r}: expected one of {OBJECTIVES}")
        if self.objective == "sft" and not self.references:
            raise ValueError(f"{self.stage}: Experiment.objective='sft' trains on reference chains: set "
                             "Experiment.references ('auto', a .jsonl file or a folder of them)")  # fmt: skip
        if self.rollout.retrieval != (self.prompt.mode == "search"):
            raise ValueError(
                f"{self.stage}: RolloutConfig.retrieval={self.rollout.retrieval} but PromptStyle.mode={self.prompt.mode!r}; "
                "retrieval goes with the 'search' prompt, no retrieval with 'reason'"
            )
        if self.num_steps < 1 or self.prompts_per_step < 1:
            raise ValueError(f"{self.stage}: num_steps and prompts_per_step must be >= 1")
        if self.cache_attention not in (None, "blockwise", "dense"):
            raise ValueError(f"Experiment.cache_attention={self.cache_attention!r}: expected 'blockwise' or 'dense'")
        P.get_protocol(self.protocol)
        if self.advantage_estimator not in ESTIMATORS:
            raise ValueError(f"Experiment.advantage_estimator={self.advantage_estimator!r}: expected one of "
                             f"{list(ESTIMATORS)}")  # fmt: skip
        self.overlong.buffer_for(self.rollout.max_response_tokens)
        if self.eval_every < 0 or (self.eval_every and not self.eval_data):
            raise ValueError(f"{self.stage}: Experiment.eval_every={self.eval_every} needs >= 0, and eval_data "
                             "(e.g. ('mirage:medqa',)) when > 0")  # fmt: skip
        if self.eval_questions is not None and self.eval_questions < 1:
            raise ValueError(f"Experiment.eval_questions={self.eval_questions}: expected >= 1 or None")


REMOTE_INPUTS = ("model", "init_from", "data_dir", "index_dir")


def stage_remote_inputs(exp: Experiment) -> Experiment:
    """`exp` with each remote input (gs://... in `REMOTE_INPUTS`) replaced by its local copy
    (medr3_jax.remote.stage: fetched once into the cache, again only where files changed)."""
    changes = {k: stage(v, knob=f"Experiment.{k}") for k in REMOTE_INPUTS if is_remote(v := getattr(exp, k))}
    return dataclasses.replace(exp, **changes) if changes else exp
