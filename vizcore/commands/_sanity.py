"""``vizcore evidence IMAGE --sanity``: the model-parameter randomisation test, the random-class test
and the edge control for each method (:mod:`vizcore.evidence.sanity`), as JSON and figures."""
from __future__ import annotations


def add_sanity_flags(p) -> None:
    """The sanity-check flags of ``vizcore evidence``."""
    from vizcore.evidence.sanity import GRANULARITIES

    g = p.add_argument_group("sanity checks (Adebayo et al. 2018)")
    g.add_argument("--sanity", action="store_true",
                   help="instead of faithfulness: re-initialise the layers of a copy of the model from the logits "
                        "down and score each method's map against the trained model's (Spearman |map|, SSIM, HOG) "
                        "at every step, plus the random-class test and a Sobel edge control; with --out writes "
                        "sanity.json, sanity.png (curves) and sanity_maps_<mode>.png")
    g.add_argument("--mode", default="both", choices=("cascading", "independent", "both"),
                   help="cascading: one more layer at each step; independent: one layer at a time (default both)")
    g.add_argument("--granularity", default="blocks", choices=GRANULARITIES,
                   help="what one step re-initialises: the layers up to each tap (blocks, default), each "
                        "conv/linear layer with its norms (layers), or every module with parameters (modules)")
    g.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after the top N units (default: all the way down to the input)")
    g.add_argument("--images", type=int, default=None, metavar="N",
                   help="the dataset version: IMAGE is a dataset (folder, list or name) and the check is averaged "
                        "over N of its images (evenly spread), with 95%% intervals; writes sanity_dataset.json and "
                        "sanity_dataset.png")


def _modes(args) -> tuple[str, ...]:
    return ("cascading", "independent") if args.mode == "both" else (args.mode,)


def _write_out(args, index: dict, figures: dict, name: str):
    """With ``--out``: each figure (file name -> function that draws it) and ``NAME.json``; the folder, or ``None``."""
    from pathlib import Path

    from vizcore.commands._util import write_json

    if not args.out:
        return None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file, draw in figures.items():
        draw().savefig(out / file, dpi=110)
    write_json(index, out / f"{name}.json")
    return out


def run_sanity(args, lm, image, settings: dict[str, dict]) -> int:
    """Run the check for ``args.methods`` on ``image`` (with the methods' ``settings``) and write or
    print the scores."""
    from vizcore.commands._util import write_json
    from vizcore.evidence.sanity import OUT_OF_SCOPE, sanity_check, sanity_figure, sanity_maps_figure
    from vizcore.jobs import RunOptions

    modes = _modes(args)
    settings = {k: v for k, v in settings.items() if k in args.methods}
    results = [sanity_check(lm, image, args.target, args.methods, mode=m, granularity=args.granularity,
                            seed=args.seed, settings=settings, max_steps=args.max_steps,
                            options=RunOptions.from_args(args), progress=True) for m in modes]
    index = {"model": lm.name, "weights": lm.weights.to_json(), "target": results[0].target,
             "results": {r.mode: r.to_json() for r in results}, "out_of_scope": OUT_OF_SCOPE}
    figures = {"sanity.png": lambda: sanity_figure(results),
               **{f"sanity_maps_{r.mode}.png": (lambda r=r: sanity_maps_figure(r)) for r in results}}
    if args.out:
        index["figure"], index["maps"] = "sanity.png", list(figures)[1:]
    out = _write_out(args, index, figures, "sanity")
    if args.json:
        write_json(index)
        return 0
    t = results[0].target
    print(f"{lm.name}: sanity checks of the evidence for {t['label']} ({t['index']}); similarity to the trained "
          "model's map (1 = unchanged; a map that explains the model should fall as its layers are randomised)")
    for r in results:
        labels = r.step_labels()
        print(f"{r.mode} ({len(r.steps) - 1} steps of {r.granularity}), Spearman |map| after the "
              f"top unit / half-way / all: ")
        for m in r.methods:
            s = r.scores[m]["spearman"]
            picks = [1, len(s) // 2, len(s) - 1] if len(s) > 2 else list(range(len(s)))
            print(f"  {m:<10} " + "  ".join(f"{labels[i]}: {s[i]:+.3f}" for i in picks)
                  + f"   random class: {r.random_class['scores'][m]['spearman']:+.3f}")
        for m, e in r.errors.items():
            print(f"  {m:<10} not run: {e}")
    print(f"note: {OUT_OF_SCOPE}")
    if out is not None:
        print(f"wrote sanity.json and figures to {out}")
    return 0



def run_sanity_dataset(args) -> int:
    """The check averaged over ``args.images`` images of the dataset ``args.image``."""
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.data import open_dataset
    from vizcore.evidence.sanity import OUT_OF_SCOPE, DatasetSanityJob, dataset_sanity_figure
    from vizcore.jobs import RunOptions, run

    if args.images < 1:
        raise ValueError("--images must be at least 1")
    if str(args.target).strip().lower() != "top1":
        raise ValueError("the dataset version explains each image's top-1 class; drop --target")
    ds = open_dataset(args.image)
    lm = load_model_cli(args)
    modes = _modes(args)
    results = [run(DatasetSanityJob(lm, ds, args.images, args.methods, mode=m, granularity=args.granularity,
                                    seed=args.seed, max_steps=args.max_steps),
                   RunOptions.from_args(args, batch_size=1, workers=0), progress=True) for m in modes]
    index = {"model": lm.name, "dataset": ds.name, "results": {r.mode: r.to_json() for r in results},
             "out_of_scope": OUT_OF_SCOPE}
    figures = {f"sanity_dataset_{r.mode}.png": (lambda r=r: dataset_sanity_figure(r)) for r in results}
    if args.out:
        index["figures"] = list(figures)
    _write_out(args, index, figures, "sanity_dataset")
    if args.json:
        write_json(index)
        return 0
    for r in results:
        print(f"{lm.name} on {r.n_images} images of {ds.name}, {r.mode}: mean Spearman |map| (95% interval) after "
              "the last step")
        for m in r.methods:
            print(f"  {m:<10} {r.mean[m]['spearman'][-1]:+.3f} ({r.low[m]['spearman'][-1]:+.3f} to "
                  f"{r.high[m]['spearman'][-1]:+.3f})")
    print(f"note: {OUT_OF_SCOPE}")
    return 0
