"""Random-init Llama models with the shapes of the SmolLM2 family, for benchmarks (nothing downloaded)."""

from __future__ import annotations

SHAPES = {
    # hidden, intermediate, layers, heads, kv heads (SmolLM2 135M / 360M / 1.7B configs)
    "135m": (576, 1536, 30, 9, 3),
    "360m": (960, 2560, 32, 15, 5),
    "1.7b": (2048, 8192, 24, 32, 32),
}


def llama(shape: str, layers: int | None = None, seed: int = 0, device: str = "cpu", dtype: str = "float32"):
    """A random-init LlamaForCausalLM of a SmolLM2 shape (vocab 49,152, tied embeddings), built on `device`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, n_layers, heads, kv = SHAPES[shape]
    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers or n_layers, num_attention_heads=heads, num_key_value_heads=kv,
                      max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model.to(dtype=getattr(torch, dtype))
