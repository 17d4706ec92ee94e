"""A precomputed network as a static website: plain HTML, CSS and PNG files, relative links.

Written by hand rather than with a site generator: the pages are a few fixed templates
filled from the cache, and the site must open from the file system and from any static
host with no JavaScript, which rules out the dashboard's own front end. Every string that
comes from a model, a file name or a dataset is HTML-escaped.

Layout (a unit's path mirrors the dashboard's address: model, weights, layer, channel)::

    DIR/index.html                                   the layers, the weights and the data
    DIR/style.css
    DIR/<model>/<weights>/<layer>/index.html         every channel: featviz beside its top patch
    DIR/<model>/<weights>/<layer>/<channel>.html     one unit
    DIR/<model>/<weights>/<layer>/img/...            its pictures

Nothing is computed but the activation maps drawn over the top images (one forward pass per
top image, as the dashboard draws them); parts that were not precomputed are marked missing.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote

from vizcore.jobs import cached

if TYPE_CHECKING:
    from vizcore.precompute import Plan

CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;color:#222}
a{color:#0b5cad}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}
.meta{color:#555;font-size:.9rem}.grid{display:flex;flex-wrap:wrap;gap:.6rem}
.tile{border:1px solid #ddd;border-radius:6px;padding:.3rem;text-align:center;font-size:.8rem;width:9.6rem}
.tile img{width:4.6rem;height:4.6rem;object-fit:cover;image-rendering:auto}
.pics img{height:8rem;margin:.2rem}.missing{color:#a33}table{border-collapse:collapse}
td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #eee}pre{background:#f6f6f6;padding:.5rem;
overflow:auto;font-size:.8rem}"""


def _safe(part: str) -> str:
    """One path segment from a model, weights or layer name (``timm/resnet50`` -> ``timm~resnet50``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "~", str(part)).strip(".")
    return s or "_"


def unit_path(model: str, weights: str, layer: str, channel: int) -> str:
    """The site path of a unit, relative to the site root."""
    return f"{_safe(model)}/{_safe(weights)}/{_safe(layer)}/{int(channel)}.html"


def layer_path(model: str, weights: str, layer: str) -> str:
    return f"{_safe(model)}/{_safe(weights)}/{_safe(layer)}/index.html"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, css: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<link rel="stylesheet" href="{css}"></head><body>\n{body}\n</body></html>\n')


def _href(frm: str, to: str) -> str:
    """A relative link from page ``frm`` to page ``to`` (both relative to the site root)."""
    depth = frm.count("/")
    return quote("../" * depth + to)


@dataclass(frozen=True)
class Site:
    """What :func:`export_site` wrote."""

    index: Path
    units: int
    missing: int


def export_site(p: "Plan", out: Path, *, dataset_arg: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> Site:
    """Write the static site of plan ``p`` (its results must be in the cache) under ``out``."""
    from vizcore.precompute import command, status
    from vizcore.render import heatmap_overlay, patch_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "style.css").write_text(CSS)
    lm = p.lm
    model, weights = lm.spec.name, getattr(lm, "weights_arg", None) or "auto"
    mining = cached(p.mining_job())
    provenance = (f"Weights: {_e(lm.weights.label())}. Data: {_e(p.dataset.name)} "
                  f"({len(p.dataset):,} images, fingerprint {_e(p.dataset.fingerprint())}).")
    settings = json.dumps(p.settings.to_json(), indent=1)
    done_units, missing = 0, 0
    layer_rows = []
    for layer in p.layers:
        n = p.channels[layer]
        st = status(p, layer)
        lpath = layer_path(model, weights, layer)
        ldir = (out / lpath).parent
        (ldir / "img").mkdir(parents=True, exist_ok=True)
        fv_batches = {}
        tiles = []
        for c in range(n):
            upath = unit_path(model, weights, layer, c)
            b = c // p.settings.featviz_batch
            if b not in fv_batches:
                fv_batches[b] = cached(p.featviz_job(layer, c))
            fv = next((r for r in (fv_batches[b] or []) if r.channel == c), None)
            parts, miss = [], []
            fv_png = None
            if fv is not None:
                fv_png = f"img/fv{c}.png"
                fv.image.save(ldir / fv_png)
                parts.append(f'<h2>Feature visualisation</h2><p><img src="{fv_png}" width="256" alt="feature '
                             f'visualisation of channel {c}"></p><p class="meta">objective {fv.objective_start:.3g} '
                             f'&rarr; {fv.objective_final:.3g} in {fv.steps} steps at {fv.size} px, seed {fv.seed}</p>')
            else:
                miss.append("feature visualisation")
            top_png = None
            hits = mining.hits(layer, c) if mining is not None and layer in mining.layers else []
            if hits:
                pics = []
                for r, h in enumerate(hits):
                    crop, mp = f"img/t{c}_{r}.png", f"img/m{c}_{r}.png"
                    patch_image(mining, layer, c, r).save(ldir / crop)
                    heatmap_overlay(lm, mining, layer, c, r).resize((128, 128)).save(ldir / mp)
                    top_png = top_png or crop
                    pics.append(f'<figure style="display:inline-block;margin:.2rem"><img src="{crop}" alt="top '
                                f'patch {r + 1}"><img src="{mp}" alt="activation map {r + 1}"><figcaption>'
                                f'#{r + 1} &middot; {h.value:.3g} &middot; {_e(Path(h.file).name)}</figcaption></figure>')
                parts.append(f"<h2>Top dataset images</h2><p class=\"meta\">The {len(hits)} images of "
                             f"{_e(p.dataset.name)} where the channel peaks highest (activation value): the "
                             f"receptive-field patch at the peak, then the channel's map over the image.</p>"
                             f'<div class="pics">{"".join(pics)}</div>')
            else:
                miss.append("top images")
            if mining is not None and hits:
                parts.append(_classes_html(p, mining, layer, c, miss))
                parts.append(_drivers_html(p, mining, layer, c, upath, miss))
            if miss:
                missing += len(miss)
                parts.append(f'<p class="missing">Not precomputed: {_e(", ".join(miss))}.</p>')
            address = f"unit?model={model}&weights={weights}&layer={layer}&channel={c}"
            body = (f'<p><a href="{_href(upath, "index.html")}">{_e(model)}</a> &rsaquo; '
                    f'<a href="index.html">{_e(layer)}</a></p><h1>{_e(model)} &middot; {_e(layer)} &middot; '
                    f'channel {c}</h1><p class="meta">{provenance} Dashboard address: '
                    f'<code>{_e(address)}</code></p>' + "".join(parts)
                    + f"<h2>Settings</h2><pre>{_e(settings)}</pre>")
            (out / upath).write_text(_page(f"{model} {layer} {c}", body, _href(upath, "style.css")))
            thumb = "".join(f'<img src="{src}" alt="">' for src in (fv_png, top_png) if src)
            tiles.append(f'<a class="tile" href="{c}.html">{thumb}<br>channel {c}</a>')
            done_units += 1
            if progress is not None:
                progress(done_units, p.n_units)
        body = (f'<p><a href="{_href(lpath, "index.html")}">{_e(model)}</a></p><h1>{_e(model)} &middot; '
                f'{_e(layer)}</h1><p class="meta">{n} channels. {provenance}</p>'
                f'<div class="grid">{"".join(tiles)}</div>')
        (out / lpath).write_text(_page(f"{model} {layer}", body, _href(lpath, "style.css")))
        state = "complete" if st.complete else ", ".join(f"{k} {st.done[k]}/{st.total[k]}" for k in st.total)
        layer_rows.append(f'<tr><td><a href="{quote(lpath)}">{_e(layer)}</a></td><td>{n}</td><td>{_e(state)}</td></tr>')
    body = (f"<h1>{_e(model)}: every unit of {len(p.layers)} layer(s)</h1><p class=\"meta\">{provenance} "
            f"Made by <code>{_e(command(p, dataset_arg))}</code> and <code>vizcore export-site</code>.</p>"
            f"<table><tr><th>layer</th><th>channels</th><th>precomputed</th></tr>{''.join(layer_rows)}</table>")
    index = out / "index.html"
    index.write_text(_page(f"{model} units", body, "style.css"))
    return Site(index, done_units, missing)


def _classes_html(p: "Plan", mining, layer: str, c: int, miss: list[str]) -> str:
    if p.is_head(layer):
        return f"<h2>Class</h2><p>This channel is the logit of &ldquo;{_e(p.lm.categories[c])}&rdquo;.</p>"
    job = p.unit_job(mining, "class support", layer, c)
    cs = cached(job) if job is not None else None
    if cs is None:
        miss.append("class support")
        return ""
    top = "".join(f"<li>{_e(s.label)} ({s.value:+.3g})</li>" for s in cs.top)
    bottom = "".join(f"<li>{_e(s.label)} ({s.value:+.3g})</li>" for s in cs.bottom)
    return (f"<h2>Classes it supports</h2><p class=\"meta\">{_e(cs.method)}</p><table><tr><th>supports</th>"
            f"<th>opposes</th></tr><tr><td><ol>{top}</ol></td><td><ol>{bottom}</ol></td></tr></table>")


def _drivers_html(p: "Plan", mining, layer: str, c: int, upath: str, miss: list[str]) -> str:
    job = p.unit_job(mining, "drivers", layer, c)
    dr = cached(job) if job is not None else None
    if dr is None:
        miss.append("drivers")
        return ""
    model, weights = p.lm.spec.name, getattr(p.lm, "weights_arg", None) or "auto"
    items = []
    for d in dr.drivers:
        label = f"{_e(d.label)} &middot; {d.value:.3g}"
        if d.layer is not None and d.layer in p.channels:
            items.append(f'<li><a href="{_href(upath, unit_path(model, weights, d.layer, d.channel))}">{label}</a></li>')
        else:
            items.append(f"<li>{label}</li>")
    return f"<h2>What drives it</h2><p class=\"meta\">{_e(dr.method)}</p><ol>{''.join(items)}</ol>"
