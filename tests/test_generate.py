"""`python -m medr3_jax.generate --checkpoint`: a trained policy is given by its run workdir (its
latest stage and step, as export and evaluate take it) and continues prompts exactly as that
checkpoint's weights do; --checkpoint with --model or --param_dtype is refused."""

from __future__ import annotations

import pytest
from flax import nnx

from medr3_jax import generate
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.sharding import make_mesh
from medr3_jax.trainer.checkpoints import load_params_from_checkpoint
from tests.test_export import CONFIG, _save_checkpoint

PROMPT = "fever and rash after"
MESH = "data=1,fsdp=-1,tensor=1"  # generate's default


def test_generate_takes_a_run_workdir_and_continues_as_its_latest_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    models = [Decoder(CONFIG, rngs=nnx.Rngs(seed)) for seed in (1, 2, 3)]
    _save_checkpoint(run / "stage1", models[0], "<bytes>", step=9, stage="stage1")
    _save_checkpoint(run / "stage3", models[1], "<bytes>", step=4, stage="stage3")
    _save_checkpoint(run / "stage3", models[2], "<bytes>", step=6, stage="stage3")
    assert generate.main(["--checkpoint", str(run), "--prompt", PROMPT, "--max_new_tokens", "12", "--quiet"]) == 0
    printed = capsys.readouterr().out

    mesh = make_mesh(MESH)
    from medr3_jax.sharding import param_shardings  # noqa: PLC0415

    want = {}
    for stage, step in (("stage3", 6), ("stage1", 9)):
        model, _ = load_params_from_checkpoint(str(run / stage / "checkpoints" / str(step)),
                                               shardings_fn=lambda cfg: param_shardings(cfg, mesh))  # fmt: skip
        want[stage] = generate.generate_text(model, byte_tokenizer(), [PROMPT], max_new_tokens=12, mesh=mesh)[0]
    assert printed == want["stage3"] + "\n" and want["stage3"] != want["stage1"]


@pytest.mark.parametrize("extra", [["--model", "smollm2_135m_instruct"], ["--param_dtype", "float32"]])
def test_checkpoint_with_model_or_dtype_is_refused(tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as stopped:  # a usage error, as argparse ends one
        generate.main(["--checkpoint", str(tmp_path), "--prompt", "x", *extra])
    assert stopped.value.code == 2
    assert (
        "error: python -m medr3_jax.generate: --checkpoint loads the trained policy in its own dtype"
        in (capsys.readouterr().err.strip().splitlines()[-1])
    )
