"""Architecture explorer: per-layer output shape, parameters, MACs, receptive field and jump.

:func:`summarize` traces one forward pass of a registered architecture (or any
``timm/<name>``) at any input size and reports, per curated tap (or per leaf
module), what the layer computes and which part of the input it sees:

* ``params``: parameters first used in that stretch of the network;
* ``macs``: multiply-accumulates of convolutions, linear layers, matrix products
  and attention (BatchNorm, activations, pooling and additions are not counted,
  the usual convention of the papers these numbers are compared with);
* ``rf``: the theoretical receptive field (Araujo et al., "Computing receptive
  fields of convolutional neural networks", Distill 2019,
  https://distill.pub/2019/computing-receptive-fields/), in input pixels;
* ``jump``: the distance in input pixels between neighbouring units (effective stride);
* ``start``: the input coordinate (pixel centres, 0-based) of the centre of the
  receptive field of output unit (0, 0); padding makes it negative or fractional.

The package is split along its seams:

* :mod:`vizcore.summary.api`: the result types (:class:`Summary`, :class:`LayerRow`,
  :class:`Geometry`) and the public functions (:func:`summarize`,
  :func:`summarize_module`, :func:`layer_geometry`, :func:`rf_box`);
* :mod:`vizcore.summary.geometry`: the per-tensor geometry and the rules that
  propagate it through convolutions, pools, padding, slicing and merges;
* :mod:`vizcore.summary.tracer`: the :class:`~torch.overrides.TorchFunctionMode`
  that applies those rules to every torch function of one forward pass, counts
  MACs and first-used parameters, and records each module's output;
* :mod:`vizcore.summary.googlenet`: GoogLeNet's inception blocks beside Table 1
  of Szegedy et al. 2015 (:func:`inception_table`).
"""
from vizcore.summary.api import (
    Geometry,
    LayerRow,
    Summary,
    layer_geometry,
    rf_box,
    summarize,
    summarize_module,
)
from vizcore.summary.googlenet import GOOGLENET_TABLE1, InceptionRow, inception_table

__all__ = [
    "GOOGLENET_TABLE1", "Geometry", "InceptionRow", "LayerRow", "Summary", "inception_table",
    "layer_geometry", "rf_box", "summarize", "summarize_module",
]
