"""Tiny random HF (torch) models written as safetensors directories: the parity references."""

from __future__ import annotations

import os

import torch


def tiny_llama3_config() -> dict:
    """LLaMA-3 style: GQA (4 q heads, 2 kv heads) and `llama3` rope scaling."""
    return dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        vocab_size=211,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=50000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
    )


def tiny_qwen2_config() -> dict:
    """Qwen2 style: qkv bias, tied embeddings, GQA."""
    return dict(
        architectures=["Qwen2ForCausalLM"],
        model_type="qwen2",
        vocab_size=197,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        rms_norm_eps=1e-6,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
    )


def build_hf_model(hf_config: dict, seed: int = 0) -> torch.nn.Module:
    """A transformers model with every parameter random (biases and norms included)."""
    import transformers  # noqa: PLC0415

    arch = hf_config["architectures"][0]
    config_cls = transformers.LlamaConfig if arch.startswith("Llama") else transformers.Qwen2Config
    config = config_cls(**{k: v for k, v in hf_config.items() if k != "architectures"})
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def save_hf_model(model: torch.nn.Module, path: str) -> str:
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def hf_logits(model: torch.nn.Module, tokens, mask, positions):
    """Logits [B,T,V] as numpy for numpy tokens/mask/positions."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            position_ids=torch.as_tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()
