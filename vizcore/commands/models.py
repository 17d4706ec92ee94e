"""``vizcore models``: every registered architecture and where its weights would come from."""
from __future__ import annotations

ORDER = 10


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered architectures and their weight sources",
                       description="List every registered architecture. `weights` names the source "
                                   "that would be used now: package, hub-cache, download or random.")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, family, weights}")
    p.set_defaults(func=run)


def run(args) -> int:
    from vizcore.commands._util import write_json
    from vizcore.models import get_spec, list_models, weights_available

    rows = [{"name": n, "family": get_spec(n).family, "weights": weights_available(get_spec(n))}
            for n in list_models(task=None)]  # classifiers, then detectors and segmenters (vizcore detect/segment)
    if args.json:
        write_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    fam = max(len(r["family"]) for r in rows)
    print(f"{'name':<{width}}  {'family':<{fam}}  weights")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<{fam}}  {r['weights']}")
    print("\nAny timm model also works as timm/<name> (e.g. timm/convnext_tiny).")
    return 0
