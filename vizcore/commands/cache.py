"""``vizcore cache``: what the results cache holds against its budget, and clearing it."""
from __future__ import annotations

import sys

ORDER = 95


def register(sub) -> None:
    p = sub.add_parser(
        "cache", help="show or clear the results cache (size per kind against VIZCORE_CACHE_MAX_MB)",
        description="The results cache lives under $VIZCORE_CACHE (default ~/.cache/vizcore), one folder "
                    "per kind. Results take at most $VIZCORE_CACHE_MAX_MB (default 5000) MB; the least "
                    "recently used are evicted first. Exported datasets and downloaded stimuli are data, "
                    "shown but outside the budget.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    i = actions.add_parser("info", help="entries and MB per kind, the total against the budget")
    i.add_argument("--json", action="store_true", help="print the same as JSON")
    i.set_defaults(func=run_info)
    c = actions.add_parser("clear", help="delete cached results (all kinds, or one with --kind)",
                           description="Delete every cached result, or every entry of one kind. Data "
                                       "(datasets, stimuli) is only deleted when named with --kind.")
    c.add_argument("--kind", default=None, help="one folder of the cache (see `vizcore cache info`)")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.set_defaults(func=run_clear)


def run_info(args) -> int:
    from vizcore.cache import info
    from vizcore.commands._util import write_json

    facts = info()
    if args.json:
        write_json(facts)
        return 0
    print(f"cache: {facts['root']}")
    rows = facts["kinds"]
    if rows:
        width = max(len(k) for k in rows)
        print(f"{'kind':<{width}}  {'entries':>7}  {'MB':>9}")
        for kind, r in rows.items():
            note = "" if r["in_budget"] else "  (data, outside the budget)"
            print(f"{kind:<{width}}  {r['entries']:>7}  {r['mb']:>9.1f}{note}")
    else:
        print("(empty)")
    used = facts["results_mb"] / facts["budget_mb"] if facts["budget_mb"] else 0.0
    print(f"results: {facts['results_mb']:.1f} MB of {facts['budget_mb']:.0f} MB budget ({used:.0%}; "
          f"VIZCORE_CACHE_MAX_MB)")
    return 0


def run_clear(args) -> int:
    from vizcore.cache import DATA_KINDS, cache_root, clear, entries, kinds

    if args.kind is not None and args.kind not in kinds():
        known = ", ".join(kinds()) or "none yet"
        raise ValueError(f"no cache kind {args.kind!r} under {cache_root()} (kinds: {known})")
    found = entries(None if args.kind is None else [args.kind])
    what = f"kind {args.kind!r}" if args.kind else "all results (data kept: " + ", ".join(DATA_KINDS) + ")"
    if not found:
        print(f"nothing to delete ({what}) under {cache_root()}")
        return 0
    mb = sum(e.bytes for e in found) / 2**20
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError(f"would delete {len(found)} entries ({mb:.1f} MB, {what}); "
                             "add --yes to delete without asking")
        answer = input(f"Delete {len(found)} entries ({mb:.1f} MB, {what}) under {cache_root()}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    n, nbytes = clear(args.kind)
    print(f"deleted {n} entries ({nbytes / 2**20:.1f} MB, {what})")
    return 0
