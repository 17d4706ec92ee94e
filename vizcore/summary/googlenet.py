"""GoogLeNet's inception blocks beside Table 1 of Szegedy et al. 2015 (https://arxiv.org/abs/1409.4842).

torchvision's GoogLeNet deviates from the paper: the "5x5" branch uses a 3x3
convolution (a known torchvision bug, pytorch/vision#906), every convolution is
followed by BatchNorm and has no bias, there is no local response
normalisation, the max pools use ``ceil_mode`` and ``maxpool4`` is 2x2 rather
than 3x3, and the auxiliary classifiers are not built here.
``variant="paper"`` swaps the 5x5 convolutions back in so the operation counts
match the paper's. The paper's own parameter column is not consistent with its
layer widths for some blocks (e.g. 4c: 463K listed, 509K from the widths) while
its ops column is (within 2%, except 5a: 54M listed, 51M computed).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn

from vizcore.models.registry import get_spec
from vizcore.summary.tracer import trace_model


# Szegedy et al. 2015, Table 1: (block, params in K, ops in M) as printed.
# Szegedy et al. 2015, Table 1: (block, params in K, ops in M) as printed.
GOOGLENET_TABLE1: dict[str, tuple[int, int]] = {
    "inception3a": (159, 128), "inception3b": (380, 304),
    "inception4a": (364, 73), "inception4b": (437, 88), "inception4c": (463, 100),
    "inception4d": (580, 119), "inception4e": (840, 170),
    "inception5a": (1072, 54), "inception5b": (1388, 71),
}


@dataclass(frozen=True)
class InceptionRow:
    """One inception block: what torchvision (or the paper's layout) computes, beside Table 1."""

    block: str
    output_shape: tuple
    params: int          # every parameter of the block (BatchNorm included)
    conv_weights: int    # convolution weights only, what the paper's table counts
    macs: int
    paper_params: int    # Table 1, in parameters (the paper prints thousands)
    paper_ops: int       # Table 1, in multiply-accumulates (the paper prints millions)

    def to_json(self) -> dict:
        return {"block": self.block, "output_shape": list(self.output_shape), "params": self.params,
                "conv_weights": self.conv_weights, "macs": self.macs,
                "paper_params": self.paper_params, "paper_ops": self.paper_ops}


def _paper_googlenet() -> nn.Module:
    """torchvision's GoogLeNet with the paper's 5x5 convolutions in the "5x5" branch."""
    from vizcore.models.building import build

    model = build(get_spec("googlenet"))
    for m in model.modules():
        if type(m).__name__ == "Inception":
            conv = m.branch3[1].conv
            m.branch3[1].conv = nn.Conv2d(conv.in_channels, conv.out_channels, 5, padding=2, bias=False,
                                          device=conv.weight.device)
    return model


@functools.lru_cache(maxsize=8)
def _inception_rows(size: int, variant: str) -> tuple[InceptionRow, ...]:
    if variant == "torchvision":
        with torch.device("meta"):
            from vizcore.models.building import build

            model = build(get_spec("googlenet"))
    elif variant == "paper":
        with torch.device("meta"):
            model = _paper_googlenet()
    else:
        raise ValueError(f"variant must be 'torchvision' or 'paper', not {variant!r}")
    tr = trace_model(f"googlenet ({variant})", model, size, "meta", [])
    modules = dict(model.named_modules())
    rows = []
    for block, (pk, pm) in GOOGLENET_TABLE1.items():
        m, rec = modules[block], tr.records[block]
        conv_w = sum(c.weight.numel() for c in m.modules() if isinstance(c, nn.Conv2d))
        rows.append(InceptionRow(block, rec.output_shape, sum(p.numel() for p in m.parameters()),
                                 conv_w, rec.macs, pk * 1000, pm * 1_000_000))
    return tuple(rows)


def inception_table(input_size: int = 224, *, variant: str = "torchvision") -> list[InceptionRow]:
    """Parameters and MACs of GoogLeNet's nine inception blocks beside the paper's Table 1.

    ``variant="torchvision"`` is the registered model (3x3 in the "5x5" branch, BatchNorm);
    ``"paper"`` puts the 5x5 convolutions back, so ``macs`` matches the paper's ops column.
    """
    return list(_inception_rows(int(input_size), variant))
