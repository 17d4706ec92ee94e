"""Channel grids carry each tile's channel number (vizcore.render.label_tile)."""
from __future__ import annotations

import numpy as np
import torch

from vizcore import render as R


def test_grid_tiles_carry_their_channel_number_in_one_corner():
    act = torch.rand(9, 6, 6)
    plain, chans = R.channel_grid(act, top=4, order="max", cell=48, pad=2)
    numbered, chans2 = R.channel_grid(act, top=4, order="max", cell=48, pad=2, labels=True)
    assert chans == chans2 and plain.size == numbered.size
    a, b = np.asarray(plain).astype(int), np.asarray(numbered).astype(int)
    for k, c in enumerate(chans):
        r, q = divmod(k, 2)
        x0, y0 = 2 + q * 50, 2 + r * 50
        tile_a, tile_b = a[y0:y0 + 48, x0:x0 + 48], b[y0:y0 + 48, x0:x0 + 48]
        changed = np.abs(tile_a - tile_b).sum(axis=2) > 0
        ys, xs = np.nonzero(changed)
        assert ys.size, c  # the label is drawn
        assert ys.max() < 24 and xs.max() < 30, c  # in the top-left corner only
        # white text on black: both present in the label box
        box = tile_b[: ys.max() + 1, : xs.max() + 1]
        assert (box > 180).all(axis=2).any() and (box == 0).all(axis=2).any()
        # the label of tile k is its channel's number: drawn alone it gives the same pixels
        alone = R.label_tile(R.Image.fromarray(tile_a.astype(np.uint8)), str(c))
        assert (np.asarray(alone).astype(int) == tile_b).all()
