"""Test-wide settings (8 emulated CPU devices, set before jax is imported; no hub lookups; a
persistent compilation cache for this session) and session fixtures for the bundled real assets
and their transformers references.

The assets are installed by `make test`; a missing one fails (AssetMissing), never skips.

The compilation cache lives in a fresh temporary folder per test session, shared with the
subprocesses the tests start (they inherit the environment): the train-loop tests build the same
programs in every run_stage and every process, and XLA compiled about half of their time.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="medr3_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
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


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    """Our Tokenizer for SmolLM2 (GGUF metadata: vocabulary and chat template), without the model."""
    from medr3_jax.models.tokenizers import load_tokenizer  # noqa: PLC0415

    return load_tokenizer(smollm2_gguf)


SAMPLE_DATASETS = ("medqa", "medqa/us_5_options", "medmcqa", "pubmedqa", "mmlu_med", "bioasq", "mirage")


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding every bundled sample dataset, built once by our builders."""
    from medr3_jax.data.datasets import prepare_dataset  # noqa: PLC0415

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for name in SAMPLE_DATASETS:
        prepare_dataset(name, assets.sample_dataset_dir(name), data_dir)
    return data_dir


@pytest.fixture(scope="session")
def sample_index_dir(tmp_path_factory, smollm2_tokenizer) -> str:
    """The bundled sample corpus embedded with MiniLM (passage store in SmolLM2 tokens), once."""
    from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus  # noqa: PLC0415

    out = str(tmp_path_factory.mktemp("sample_index"))
    settings = EmbedSettings(batch_size=64, max_len=256, passage_tokens=256)
    embed_corpus(
        [assets.sample_corpus_dir()], assets.minilm_dir(), out, settings=settings, policy_tokenizer=smollm2_tokenizer
    )
    return out
