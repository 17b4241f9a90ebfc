"""Tiny seeded models built in-process, for tests: no network, no files, a second to build.

``tiny_model()`` builds a randomly initialised Hugging Face Llama (or Gemma 3) of a few layers
with a small byte-level BPE tokenizer trained in-process on a fixed text, and boots it through
the same ``TransformerBridge.boot_transformers`` path as the real models, so tests exercise the
code the pretrained models run (grouped-query attention, rotary embeddings, RMSNorm, gated MLP;
Gemma 3 adds sliding-window layers and QK norms). The same seed gives the same weights and the
same tokenizer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import torch

from mechlin._checks import checked
from mechlin.errors import ArgumentError
from mechlin.models import _DtypeName, _torch_dtype, boot_bridge, record_source

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

# Training text for the tiny tokenizer: enough words that common ones become single tokens
# while rarer ones split into several (so subject spans cross token boundaries in tests).
_CORPUS = (
    """
The Eiffel Tower is located in the city of Paris. The Colosseum is located in the city of Rome.
The Space Needle is located in the city of Seattle. Big Ben is in London. Vinson Massif is
located in the continent of Antarctica. Beats Music is owned by Apple. The mother tongue of
Danielle Darrieux is French. Toko Yasuda plays the guitar. Miles Davis plays the trumpet.
The capital of France is Paris. The capital of Italy is Rome. The capital of Germany is Berlin.
The official language of Spain is Spanish. The currency of Japan is the yen.
"""
    * 4
)


@lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 400, *, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a fixed text (deterministic, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    specials = ["<bos>", "<eos>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def tiny_hf_model(
    *,
    arch: Literal["llama", "gemma3"] = "llama",
    seed: int = 0,
    n_layers: int = 3,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    vocab_size: int = 400,
) -> PreTrainedModel:
    """The Hugging Face model behind ``tiny_model`` (same arguments, same weights)."""
    from transformers import (  # noqa: PLC0415
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=d_model // n_heads,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model: PreTrainedModel
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rms_norm_eps=1e-5))
    elif arch == "gemma3":
        config = Gemma3TextConfig(
            **common, sliding_window=4, query_pre_attn_scalar=d_model // n_heads
        )
        model = Gemma3ForCausalLM(config)
    else:
        raise ArgumentError(f"arch must be 'llama' or 'gemma3', not {arch!r}")
    # Random init leaves the norms at their identity value; perturb them so tests see them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.config.architectures = [type(model).__name__]
    return model.eval()


@checked
def tiny_model(
    *,
    arch: Literal["llama", "gemma3"] = "llama",
    seed: int = 0,
    n_layers: int = 3,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    add_bos: bool = True,
    dtype: torch.dtype | _DtypeName = torch.float32,
) -> TransformerBridge:
    """A tiny random model as a ``TransformerBridge`` in eval mode, built in-process.

    ``dtype`` is a torch dtype or its name (``"float32"``, ``"bfloat16"``, ``"float16"``,
    ``"float64"``); another value is an ``ArgumentError``.

    >>> model = tiny_model(seed=0)
    >>> model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_key_value_heads
    (3, 4, 2)
    """
    dtype = _torch_dtype("tiny_model", dtype)
    if d_model % n_heads or n_heads % n_kv_heads:
        raise ArgumentError(
            f"d_model={d_model} must be a multiple of n_heads={n_heads}, and n_heads of "
            f"n_kv_heads={n_kv_heads} (each key-value head serves a whole group of heads)"
        )
    tokenizer = tiny_tokenizer(add_bos=add_bos)
    hf_model = tiny_hf_model(
        arch=arch,
        seed=seed,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_mlp=d_mlp,
        vocab_size=len(tokenizer),
    )
    hf_model.to(dtype=dtype)  # type: ignore[call-arg]  # transformers stubs mistype .to
    bridge = boot_bridge(f"mechlin-tiny-{arch}", hf_model, tokenizer, device="cpu", dtype=dtype)
    shape = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads)
    record_source(
        bridge, "tiny_model", "tiny", arch=arch, seed=seed, d_mlp=d_mlp, add_bos=add_bos,
        dtype=dtype, **shape,
    )  # fmt: skip
    return bridge
