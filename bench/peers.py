"""Peers shared by the benchmarks: transformers (torch) models of our presets' shapes."""

from __future__ import annotations

from medr3_jax.models.config import ModelConfig


def hf_random_model(config: ModelConfig, dtype: str = "bfloat16"):
    """A transformers model of `config`'s shapes with random weights, on the GPU if torch sees
    one (the same device class as ours), in `dtype`."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    hf = config.to_hf_config()
    arch = hf.pop("architectures")[0]
    config_cls = transformers.LlamaConfig if config.family == "llama" else transformers.Qwen2Config
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    with device:
        model = getattr(transformers, arch)(config_cls(**hf))
    return model.to(getattr(torch, dtype)).eval()


def synchronize(model) -> None:
    """Waits for the model's device (torch CUDA work is asynchronous)."""
    import torch  # noqa: PLC0415

    if model.device.type == "cuda":
        torch.cuda.synchronize()
