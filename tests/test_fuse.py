"""Fused projections (dno.policy.fuse): the same logits and samples as the model's own layers, and
the model as it was once the sampler is done."""

from __future__ import annotations

import torch

from dno.policy.fuse import _Part, fused_projections
from dno.policy.sample import Sampler, SamplingOptions
from helpers import tiny_llama

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three, slowly."}]]


def test_fused_projections_give_the_same_logits_and_are_undone():
    model = tiny_llama(97, initializer_range=0.3)
    before = {name: p.clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 97, (3, 11))
    with torch.no_grad():
        plain = model(ids).logits
        with fused_projections(model):
            attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
            assert all(isinstance(getattr(attention, n), _Part) for n in ("q_proj", "k_proj", "v_proj"))
            assert all(isinstance(getattr(mlp, n), _Part) for n in ("gate_proj", "up_proj"))
            assert attention.q_proj.fused is attention.v_proj.fused and attention.q_proj.fused is not mlp.up_proj.fused
            fused = model(ids).logits
        after = model(ids).logits
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    assert torch.equal(after, plain)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert {name: p for name, p in model.named_parameters()}.keys() == before.keys()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_a_lora_adapters_projections_are_left_alone():
    from omegaconf import OmegaConf

    from dno.policy.lora import add_adapter

    model = add_adapter(tiny_llama(97), OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0,
                                                         "target_modules": ["q_proj", "v_proj"]}), seed=0)
    attention = model.base_model.model.model.layers[0].self_attn
    q_proj, k_proj = attention.q_proj, attention.k_proj
    with fused_projections(model):
        assert attention.q_proj is q_proj and attention.k_proj is k_proj  # q and v adapted: the group unfused
        assert isinstance(model.base_model.model.model.layers[0].mlp.up_proj, _Part)  # the MLP's still fused


def test_the_sampler_draws_the_same_samples_with_and_without_fusion():
    model, tok = _tiny_with_tokenizer()
    options = SamplingOptions(max_new_tokens=8, temperature=0.7, top_p=0.95)
    plain = Sampler(model, tok, options).sample(PROMPTS, n=3, seed=5)
    with fused_projections(model):
        assert Sampler(model, tok, options).sample(PROMPTS, n=3, seed=5) == plain


def _tiny_with_tokenizer():
    from dno.policy.load import load_model, load_tokenizer
    from helpers import make_cfg

    cfg = make_cfg("model=tiny_random")
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    return load_model(cfg.model, cfg.cache_dir, tok), tok
