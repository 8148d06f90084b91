"""Build LLaMA and GPT-2 language models from a recipe section, through ``transformers`` configs.

Both use SDPA attention and the tokenizer's special ids (``<pad>``=0, ``<s>``=1, ``</s>``=2).
Embeddings follow BabyLlama: LLaMA keeps separate input and output embeddings (its 360M teacher
and 58M student counts assume that), GPT-2 ties them (its 705M teacher count assumes that);
``tie_embeddings`` in the recipe overrides either. Position tables (GPT-2) and the RoPE setting
(LLaMA) allow ``2 * seq_len`` positions, as BabyLlama did; positions past ``seq_len`` are untrained,
so generation warns past that length.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from distill.recipe import ModelConfig
from distill.tokenizer import BOS_ID, EOS_ID, PAD_ID


def model_config(model_cfg: ModelConfig, vocab_size: int, seq_len: int):
    """The ``transformers`` config (LlamaConfig or GPT2Config) for one recipe model section."""
    common = dict(vocab_size=vocab_size, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    if model_cfg.arch == "llama":
        tie = False if model_cfg.tie_embeddings is None else model_cfg.tie_embeddings
        return LlamaConfig(
            hidden_size=model_cfg.hidden_size,
            intermediate_size=model_cfg.intermediate_size,
            num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_heads,
            num_key_value_heads=model_cfg.num_kv_heads or model_cfg.num_heads,
            max_position_embeddings=2 * seq_len,
            tie_word_embeddings=tie,
            attention_dropout=model_cfg.dropout or 0.0,
            **common,
        )
    if model_cfg.arch == "gpt2":
        tie = True if model_cfg.tie_embeddings is None else model_cfg.tie_embeddings
        return GPT2Config(
            n_embd=model_cfg.hidden_size,
            n_layer=model_cfg.num_layers,
            n_head=model_cfg.num_heads,
            n_inner=model_cfg.intermediate_size or 4 * model_cfg.hidden_size,
            n_positions=2 * seq_len,
            tie_word_embeddings=tie,
            **({} if model_cfg.dropout is None else dict(resid_pdrop=model_cfg.dropout, embd_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout)),
            **common,
        )
    raise ValueError(f"unknown arch {model_cfg.arch!r}")


def build_model(model_cfg: ModelConfig, vocab_size: int, seq_len: int) -> torch.nn.Module:
    """A freshly initialised ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` (fp32, SDPA attention).

    Seed first (``accelerate.utils.set_seed``) for a reproducible initialisation. Works under
    ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    config = model_config(model_cfg, vocab_size, seq_len)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if getattr(model, "loss_type", None) is None:  # GPT2LMHeadModel's name hides its loss from transformers
        model.loss_type = "ForCausalLM"
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied weights count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
