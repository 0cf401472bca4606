"""Test-wide settings (8 emulated CPU devices, set before jax is imported; no hub lookups) and
session fixtures for the bundled real assets and their transformers references.

The assets are installed by `make test`; a missing one fails (AssetMissing), never skips.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from medr3_jax import assets  # noqa: E402


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


@pytest.fixture(scope="session")
def smollm2():
    """(our Decoder, our Tokenizer) for the bundled SmolLM2-135M-Instruct, f32."""
    from medr3_jax.models.loading import load_model  # noqa: PLC0415

    return load_model("smollm2_135m_instruct")
