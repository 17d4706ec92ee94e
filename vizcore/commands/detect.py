"""``vizcore detect``: R-CNN, Fast R-CNN (any ImageNet classifier), Faster / Mask R-CNN on one image."""
from __future__ import annotations

ORDER = 47
METHOD_MODEL = {"rcnn": "efficientnet_lite0", "fast-rcnn": "efficientnet_lite0",
                "faster-rcnn": "fasterrcnn_resnet50_fpn_v2", "mask-rcnn": "maskrcnn_resnet50_fpn_v2"}


def register(sub) -> None:
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "detect", help="find objects: R-CNN, Fast R-CNN, Faster R-CNN or Mask R-CNN",
        description="rcnn and fast-rcnn name Selective Search proposals with an ImageNet classifier "
                    "(R-CNN: one forward pass per proposal; Fast R-CNN: one pass to --layer, then RoI "
                    "pooling and the rest of the network per proposal). faster-rcnn and mask-rcnn run "
                    "torchvision's COCO detectors (random init offline, with a warning). Writes "
                    "detections.json and overlay.png (mask-rcnn: masks.png too) to --out.")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("--method", default="fast-rcnn", choices=tuple(METHOD_MODEL), help="default fast-rcnn")
    p.add_argument("--model", default=None, help="rcnn/fast-rcnn: an ImageNet classifier (default efficientnet_lite0); "
                   "faster-rcnn/mask-rcnn: a detector (default fasterrcnn_resnet50_fpn_v2 / maskrcnn_resnet50_fpn_v2; "
                   "also fasterrcnn_mobilenet_v3_large_fpn)")
    p.add_argument("--weights", default="auto",
                   help="auto (package, hub cache, download, random), random, or a checkpoint path")
    p.add_argument("--proposals", type=int, default=2000, help="Selective Search proposals kept (default 2000)")
    p.add_argument("--mode", default="fast", choices=("fast", "quality"), help="Selective Search mode")
    p.add_argument("--layer", default=None, help="fast-rcnn: the tap to pool from (default the last stage)")
    p.add_argument("--pool", default="align", choices=("align", "pool"), help="fast-rcnn: RoIAlign or RoIPool")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum class probability / score (default 0.5)")
    p.add_argument("--iou", type=float, default=0.3, help="rcnn/fast-rcnn: per-class NMS IoU (default 0.3)")
    p.add_argument("--context", type=int, default=16, help="rcnn/fast-rcnn: context padding in pixels (default 16)")
    p.add_argument("--min-size", type=int, default=None, help="faster/mask-rcnn: short side of the input (default 800)")
    p.add_argument("--out", default=None, help="output folder (created if missing)")
    p.add_argument("--json", action="store_true", help="print detections.json to stdout")
    add_run_flags(p, batch_size=32, engine=False, workers=False)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from vizcore.cache import atomic_write_bytes
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.commands.predict import read_images
    from vizcore.render import draw_boxes, masks_overlay, png_bytes

    (image,) = read_images([args.image])
    args.model = args.model or METHOD_MODEL[args.method]
    classic = args.method in ("rcnn", "fast-rcnn")
    if classic:  # bad input (a tiny image, no proposal) is found before the model loads
        from vizcore.regions.proposals import selective_search

        props = selective_search(image, mode=args.mode, max_proposals=args.proposals)
    lm = load_model_cli(args, task="classification" if classic else "detection")
    out = Path(args.out) if args.out else None
    masks = None
    if classic:
        from vizcore import jobs
        from vizcore.regions.rcnn import DetectJob

        print(f"{len(props)} proposals ({args.mode}, {props.seconds:.2f} s)", file=sys.stderr)
        kw = {"layer": args.layer, "pool": args.pool} if args.method == "fast-rcnn" else {}
        job = DetectJob(lm, image, props.boxes, method=args.method, threshold=args.threshold, iou=args.iou,
                        context=args.context, batch_size=args.batch_size, **kw)
        result = jobs.run(job, jobs.RunOptions.from_args(args), progress=True)
        doc = dict(result.to_json(), proposals_info=props.to_json(), image=str(args.image))
        boxes = result.boxes[[d.proposal for d in result.detections]]
        labels = [f"{d.label} {d.score:.2f}" for d in result.detections]
    else:
        from vizcore.regions.rpn import run_rpn

        v = run_rpn(lm, image, min_size=args.min_size, score_threshold=args.threshold)
        doc = dict(v.to_json(), method=args.method, image=str(args.image))
        boxes, masks = v.boxes, v.masks
        labels = [f"{n} {s:.2f}" for n, s in zip(v.label_names, v.scores)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "overlay.png", png_bytes(draw_boxes(image, boxes, labels)))
        if masks is not None:
            atomic_write_bytes(out / "masks.png", png_bytes(masks_overlay(image, masks)))
        write_json(doc, out / "detections.json")
    if args.json:
        write_json(doc)
    else:
        for d in doc["detections"]:
            print(f"  {d['score']:6.3f}  {d['label']:<28} {[round(v) for v in d['box']]}")
        print(f"{len(doc['detections'])} detections", file=sys.stderr)
    return 0
