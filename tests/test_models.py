"""Model building: BabyLlama parameter counts (on the meta device) and the tiny models."""
from __future__ import annotations

import pytest
import torch

from conftest import REPO
from distill.models import build_model, count_parameters
from distill.recipe import ModelConfig, load_recipe


@pytest.mark.parametrize("recipe_name", ["babylm-10m.yaml", "britannica-22m.yaml"])
def test_babyllama_sizes_within_2_percent(recipe_name):
    recipe = load_recipe(REPO / "recipes" / recipe_name)
    expected = {"llama": 360e6, "gpt2": 705e6}
    with torch.device("meta"):
        for teacher in recipe.teachers:
            model = build_model(teacher, recipe.tokenizer.vocab_size, recipe.data.seq_len)
            count = count_parameters(model)
            assert abs(count / expected[teacher.arch] - 1) < 0.02, (teacher.name, count)
        student = build_model(recipe.student, recipe.tokenizer.vocab_size, recipe.data.seq_len)
        assert abs(count_parameters(student) / 58e6 - 1) < 0.02


def test_tiny_models_forward_and_config():
    llama_cfg = ModelConfig(name="l", arch="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    gpt2_cfg = ModelConfig(name="g", arch="gpt2", hidden_size=32, num_layers=2, num_heads=2)
    assert gpt2_cfg.intermediate_size == 128
    torch.manual_seed(0)
    llama = build_model(llama_cfg, 300, 16)
    gpt2 = build_model(gpt2_cfg, 300, 16)
    for model in (llama, gpt2):
        config = model.config
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 0)
        assert config._attn_implementation == "sdpa"
        ids = torch.randint(3, 300, (2, 16))
        out = model(input_ids=ids, labels=ids)
        assert out.logits.shape == (2, 16, 300) and torch.isfinite(out.loss)
    assert llama.config.num_key_value_heads == 2
    # BabyLlama: LLaMA keeps its output embedding separate, GPT-2 ties it.
    assert llama.lm_head.weight.data_ptr() != llama.model.embed_tokens.weight.data_ptr()
    assert gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr()
    assert count_parameters(gpt2) == sum(p.numel() for p in gpt2.parameters())
