"""Tiny random configurations of every architecture family the matrix tests, built in-process.

Each entry builds a Hugging Face config small enough for a test (3 layers, d_model 64, the
tiny BPE tokenizer's vocabulary) and names, in the plain Hugging Face model, the modules the
references hook (``tests/reference/architecture_ref.py``): the decoder layers, the module whose
output is the attention sublayer's contribution (``attn_out``), the MLP's (``mlp_out``), the MLP's
output projection (its input is ``mlp_post``) and the attention's output projection (its output
is ``attn_proj_out``). These paths are written from the Hugging Face modelling code, not read from
the bridge, so the references stay independent of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

D, N_LAYERS, HEADS, D_MLP = 64, 3, 4, 128
_LLAMA_LIKE = dict(
    hidden_size=D, num_hidden_layers=N_LAYERS, num_attention_heads=HEADS, intermediate_size=D_MLP,
    max_position_embeddings=128,
)  # fmt: skip


@dataclass(frozen=True)
class Arch:
    family: str  # the matrix's row name
    config: str  # transformers config class
    kwargs: dict[str, Any]
    layers: str  # the decoder layers' ModuleList
    attn: str  # per layer: output (or output[0]) is the attention sublayer's contribution
    mlp: str  # per layer: output is the MLP sublayer's contribution
    down: str  # per layer: the MLP's output projection (its input: the neurons)
    o_proj: str  # per layer: the attention's output projection
    notes: tuple[str, ...] = field(default=())


def _llama_like(family: str, config: str, **extra: Any) -> Arch:
    return Arch(
        family, config, {**_LLAMA_LIKE, **extra}, "model.layers", "self_attn", "mlp",
        "mlp.down_proj", "self_attn.o_proj",
    )  # fmt: skip


_GPT2 = dict(n_embd=D, n_layer=N_LAYERS, n_head=HEADS, n_positions=128)
ARCHITECTURES: dict[str, Arch] = {
    a.family: a
    for a in (
        Arch("gpt2", "GPT2Config", _GPT2, "transformer.h", "attn", "mlp", "mlp.c_proj",
             "attn.c_proj"),
        Arch("gptj", "GPTJConfig", {**_GPT2, "rotary_dim": 8}, "transformer.h", "attn", "mlp",
             "mlp.fc_out", "attn.out_proj", ("parallel attention and MLP",)),
        Arch("gpt_neox", "GPTNeoXConfig", _LLAMA_LIKE, "gpt_neox.layers", "attention", "mlp",
             "mlp.dense_4h_to_h", "attention.dense", ("Pythia", "parallel attention and MLP")),
        Arch("opt", "OPTConfig",
             dict(hidden_size=D, num_hidden_layers=N_LAYERS, num_attention_heads=HEADS,
                  ffn_dim=D_MLP, word_embed_proj_dim=D, max_position_embeddings=128),
             "model.decoder.layers", "self_attn", "fc2", "fc2", "self_attn.out_proj"),
        Arch("phi", "PhiConfig", _LLAMA_LIKE, "model.layers", "self_attn", "mlp", "mlp.fc2",
             "self_attn.dense", ("parallel attention and MLP",)),
        _llama_like("phi3", "Phi3Config", num_key_value_heads=2),
        _llama_like("qwen2", "Qwen2Config", num_key_value_heads=2),
        _llama_like("qwen3", "Qwen3Config", num_key_value_heads=2, head_dim=16),
        _llama_like("mistral", "MistralConfig", num_key_value_heads=1, sliding_window=8),
        _llama_like("llama", "LlamaConfig", num_key_value_heads=2),
        _llama_like("olmo", "OlmoConfig"),
        Arch("olmo2", "Olmo2Config", _LLAMA_LIKE, "model.layers", "post_attention_layernorm",
             "post_feedforward_layernorm", "mlp.down_proj", "self_attn.o_proj",
             ("norms after the sublayers",)),
        Arch("gemma2", "Gemma2Config",
             {**_LLAMA_LIKE, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 8},
             "model.layers", "post_attention_layernorm", "post_feedforward_layernorm",
             "mlp.down_proj", "self_attn.o_proj", ("sliding window", "logit softcap")),
        Arch("gemma3", "Gemma3TextConfig",
             {**_LLAMA_LIKE, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 8},
             "model.layers", "post_attention_layernorm", "post_feedforward_layernorm",
             "mlp.down_proj", "self_attn.o_proj", ("sliding window", "QK norms")),
        _llama_like("stablelm", "StableLmConfig", num_key_value_heads=4),
        Arch("starcoder2", "Starcoder2Config", {**_LLAMA_LIKE, "num_key_value_heads": 2},
             "model.layers", "self_attn", "mlp", "mlp.c_proj", "self_attn.o_proj"),
        _llama_like("cohere", "CohereConfig", num_key_value_heads=2),
        _llama_like("granite", "GraniteConfig", num_key_value_heads=2),
        Arch("bloom", "BloomConfig", dict(hidden_size=D, n_layer=N_LAYERS, n_head=HEADS),
             "transformer.h", "self_attention.dense", "mlp.dense_4h_to_h", "mlp.dense_4h_to_h",
             "self_attention.dense", ("ALiBi",)),
        Arch("falcon", "FalconConfig",
             dict(hidden_size=D, num_hidden_layers=N_LAYERS, num_attention_heads=HEADS),
             "transformer.h", "self_attention", "mlp", "mlp.dense_4h_to_h",
             "self_attention.dense", ("parallel attention and MLP", "multi-query")),
        Arch("gpt_neo", "GPTNeoConfig",
             dict(hidden_size=D, num_layers=N_LAYERS, num_heads=HEADS, window_size=8,
                  attention_types=[[["global", "local"], 1], [["global"], 1]],
                  max_position_embeddings=128),
             "transformer.h", "attn", "mlp", "mlp.c_proj", "attn.attention.out_proj",
             ("local attention layers",)),
        Arch("codegen", "CodeGenConfig", {**_GPT2, "rotary_dim": 8}, "transformer.h", "attn",
             "mlp", "mlp.fc_out", "attn.out_proj", ("parallel attention and MLP",)),
        Arch("gpt_bigcode", "GPTBigCodeConfig", _GPT2, "transformer.h", "attn", "mlp",
             "mlp.c_proj", "attn.c_proj", ("multi-query",)),
        Arch("mpt", "MptConfig", dict(d_model=D, n_layers=N_LAYERS, n_heads=HEADS, max_seq_len=128),
             "transformer.blocks", "attn", "ffn.down_proj", "ffn.down_proj", "attn.out_proj",
             ("ALiBi",)),
        Arch("xglm", "XGLMConfig",
             dict(d_model=D, num_layers=N_LAYERS, attention_heads=HEADS, ffn_dim=D_MLP,
                  max_position_embeddings=128),
             "model.layers", "self_attn", "fc2", "fc2", "self_attn.out_proj"),
    )
}  # fmt: skip


def build_hf(family: str, vocab_size: int, *, seed: int = 0) -> Any:
    """The randomly initialised Hugging Face model of ``family`` (eval mode, eager attention)."""
    import transformers
    from transformers import AutoModelForCausalLM

    arch = ARCHITECTURES[family]
    config = getattr(transformers, arch.config)(
        vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=2, **arch.kwargs
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # random init leaves norms at identity: perturb them so tests see them
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()
