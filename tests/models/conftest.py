"""Session fixtures for the bundled real assets and their transformers references.

The assets are installed by `make test`; a missing one fails (AssetMissing), never skips.
Expensive loads happen once per session.
"""

from __future__ import annotations

import os

import pytest

from medr3_jax import assets


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    return assets.smollm2_gguf()


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf):
    """transformers' LlamaForCausalLM from the GGUF (its own dequantiser and un-permutation), f32."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    folder, name = os.path.split(smollm2_gguf)
    return transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf):
    import transformers  # noqa: PLC0415

    folder, name = os.path.split(smollm2_gguf)
    return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="session")
def qwen_ranks_path() -> str:
    return assets.qwen_tiktoken()
