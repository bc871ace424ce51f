"""One matmul where a decoder layer makes three (q, k, v) or two (gate, up): a lever measured for the sampler.

While `fused_projections(model)` is open, each attention's q_proj, k_proj and v_proj (and each MLP's gate_proj
and up_proj) are views of one linear layer holding their weights side by side: the first view computes all of
them on its input and the others hand out their slices of that result. The weights are concatenated when it
opens (so a model trained since is fused as it is now) and the original layers are back when it closes; the
model's own code runs unchanged. A layer whose projections are not plain `nn.Linear`s sharing one input size
(a LoRA adapter, a quantised layer) is left as it is.

The fused matmul gives the same logits as the three up to float rounding (tests/test_fuse.py holds them to 1e-5
and checks that the sampler draws the same samples), so the samples do not change. It did not make the sampler
faster on this repository's CPU (results/update_levers.md), so the sampler does not use it: experiments/update_levers.py
measures it, and so can anyone on their own hardware.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # Llama, Mistral, Qwen2, ... names


class _Fused(nn.Module):
    """Several projections of one input as one linear layer; `_Part`s hand out the slices."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        with torch.no_grad():
            weight = torch.cat([layer.weight for layer in layers])
            bias = torch.cat([layer.bias for layer in layers]) if layers[0].bias is not None else None
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                                dtype=weight.dtype)
        self.linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            self.linear.bias = nn.Parameter(bias, requires_grad=False)
        self.sizes = [layer.out_features for layer in layers]
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def part(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if x is not self._input:  # the first of the group to be called on this input computes them all
            self._input, self._outputs = x, self.linear(x).split(self.sizes, dim=-1)
        out = self._outputs[i]
        if i == len(self.sizes) - 1:  # the last one: nothing kept alive until the next call
            self._input, self._outputs = None, ()
        return out


class _Part(nn.Module):
    def __init__(self, fused: _Fused, i: int) -> None:
        super().__init__()
        self.fused, self.i = fused, i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.part(self.i, x)


def _fusable(module: nn.Module, names: tuple[str, ...]) -> list[nn.Linear] | None:
    layers = [getattr(module, name, None) for name in names]
    if not all(type(layer) is nn.Linear for layer in layers):
        return None
    if len({layer.in_features for layer in layers}) != 1 or len({layer.bias is None for layer in layers}) != 1:
        return None
    return layers


def fuse(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Fuse `model`'s q/k/v and gate/up projections in place; returns what `unfuse` needs to undo it."""
    swapped = []
    for module in list(model.modules()):
        for names in GROUPS:
            layers = _fusable(module, names)
            if layers is None:
                continue
            fused = _Fused(layers)
            for i, (name, layer) in enumerate(zip(names, layers, strict=True)):
                swapped.append((module, name, layer))
                setattr(module, name, _Part(fused, i))
    return swapped


def unfuse(swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for module, name, layer in reversed(swapped):
        setattr(module, name, layer)


@contextlib.contextmanager
def fused_projections(model: nn.Module):
    """While open, `model`'s q/k/v and gate/up projections are fused (see the module docstring)."""
    swapped = fuse(model)
    try:
        yield model
    finally:
        unfuse(swapped)
