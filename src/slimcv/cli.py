"""``slimcv`` command line: each command builds a config and calls one public function."""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from slimcv.errors import SlimcvError
from slimcv.run_folder import LAST_JSON

EXAMPLES = {
    "train": "slimcv train --model unet_small --data synthetic-shapes --epochs 3 --out-dir runs/shapes\n"
             "  slimcv train --config recipes/camvid_teacher.yaml --set optim.lr=0.002 --resume",
    "eval": "slimcv eval runs/shapes\n"
            "  slimcv eval --model resnet18 --weights resnet18.pth --data imagefolder:data/flowers --out metrics.json\n"
            "  slimcv eval model.onnx --data camvid:data/camvid",
    "distill": "slimcv distill --teacher runs/teacher --model unet_small --data camvid:data/camvid --size 176 240 \\\n"
               "      --mode offline --loss kd:1.0 --alpha 1.0 --temperature 1 --epochs 30 --out-dir runs/student",
    "prune": "slimcv prune runs/teacher --remove 0.3 --target params --steps 3 --finetune-epochs 5 -o runs/pruned\n"
             "  slimcv prune runs/teacher --remove 0.5 --target macs --method soft --finetune-epochs 10 --distill kd\n"
             "  slimcv prune runs/teacher --sensitivity 0.25 0.5 0.75 --max-drop 1.0 --finetune-epochs 5\n"
             "  slimcv prune --model mypackage.nets:build_net --weights net.pth --data camvid:data/camvid -o runs/p",
    "run": "slimcv run recipes/camvid.yaml --set distill.epochs=5 --set data.batch_size=4\n"
           "  slimcv run recipes/cifar10.yaml --until distill --dry-run",
    "compress": "slimcv compress runs/teacher --data camvid:data/camvid --target-speedup 4 --max-drop 1.0 "
                "-o runs/compressed",
    "demo": "slimcv demo\n  slimcv demo --set compress.budget_minutes=3\n"
            "  slimcv demo --data camvid:../shared/data/camvid -o runs/demo_camvid",
    "export": "slimcv export runs/teacher -o teacher.onnx\n"
              "  slimcv export resnet20 --data cifar10:data/cifar10 --static-batch 1 --opset 17 --simplify -o r20.onnx",
    "quantize": "slimcv quantize runs/teacher -o runs/int8 --calibration minmax entropy percentile --qat-epochs 2\n"
                "  slimcv quantize runs/cifar_resnet20 -o runs/int8 --dynamic --exclude fc --max-drop 0.5 --threads 2\n"
                "  slimcv quantize model.onnx --data camvid:data/camvid -o runs/int8",
    "bench": "slimcv bench runs/teacher runs/student runs/int8/model_int8_minmax.onnx --out bench.json\n"
             "  slimcv bench resnet18 mobilenet_v3_large --size 224 224 --batch-sizes 1 8 --threads 2",
    "report": "slimcv report runs/teacher runs/student runs/pruned runs/int8 -o reports/camvid --measure\n"
              "  slimcv report runs/teacher runs/student --bench bench.json --baseline teacher --images 6",
    "predict": "slimcv predict runs/int8 photos/ -o predictions\n"
               "  slimcv predict model.onnx 'data/val/*.png' -o out --batch-size 16 --runtime openvino",
    "serve": "slimcv serve runs/int8 --port 8000\n"
             "  curl -F file=@street.png 'http://127.0.0.1:8000/predict?format=json'",
    "check-data": "slimcv check-data camvid:data/camvid --split train --class-weights",
    "models": "slimcv models --task segmentation",
    "datasets": "slimcv datasets",
}


def _train_args(t: argparse.ArgumentParser) -> None:
    from slimcv.cli_flags import TRAIN, add_flags
    from slimcv.config import TrainConfig

    t.add_argument("--config", help="YAML file with train settings (CLI flags override it)")
    add_flags(t, TRAIN, TrainConfig)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model_kwargs.base_width=16")


def _model_args(sp: argparse.ArgumentParser, positional: str = "source") -> None:
    """The same way into every command that takes a model: a folder, or --model NAME --weights FILE."""
    sp.add_argument(positional, nargs="?", help="model folder written by slimcv (or a weights file with --model)")
    sp.add_argument("--model", help="architecture: a registered name (see `slimcv models`) or your own "
                    "package.module:factory (imported: runs that code)")
    sp.add_argument("--weights", help="local weights file (.safetensors, or a state_dict .pth) for --model")


class _Version(argparse.Action):
    """--version, printed on one line (argparse's own action wraps it at the terminal width)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    """slimcv's version and the versions of the libraries that decide its numbers (without importing torch)."""
    from importlib import metadata

    from slimcv import __version__

    parts = [f"slimcv {__version__}"]
    for dist in ("torch", "torchvision", "onnxruntime", "openvino", "torch-pruning"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimcv", description="Make vision models small and fast: distil, prune, "
                                "quantize, export, measure.")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    trust_help = ("let model folders rebuild their model with the code their model.json names "
                  "(package.module:factory); only for folders you trust")
    p.add_argument("--trust-remote-code", action="store_true", help=trust_help)
    p.add_argument("--version", action=_Version, help="print the versions of slimcv and its runtimes, then exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {EXAMPLES[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--trust-remote-code", action="store_true", default=argparse.SUPPRESS, help=trust_help)
        return sp

    t = add("train", "Train a model with the shared engine (resumable, DDP-aware under torchrun).")
    _train_args(t)

    d = add("distill", "Train a student from a teacher: CE on labels + KD losses (online or offline cached teacher).")
    _train_args(d)
    from slimcv.cli_flags import DISTILL, PRUNE, add_flags
    from slimcv.config import DistillConfig, PruneConfig

    add_flags(d, DISTILL, DistillConfig)
    d.add_argument("--loss", action="append", metavar="NAME[:WEIGHT]",
                   help="KD loss and weight, repeatable: kd, cwd, dkd, dist (e.g. --loss kd:1 --loss cwd:3); "
                   "a detector: feature (its neck, the default) and kd (its head)")
    d.add_argument("--temperature", "-T", type=float, help="temperature of every --loss (default: 1 for "
                   "segmentation, 4 for classification)")

    pr = add("prune", "Structured pruning of a trained run toward a params/MACs target, fine-tuning after each step.")
    _model_args(pr)
    pr.add_argument("--data", help="dataset spec (default: the model folder's own data settings)")
    add_flags(pr, PRUNE, PruneConfig)
    pr.add_argument("--distill", action="append", metavar="NAME[:WEIGHT]",
                    help="distil from the unpruned model while fine-tuning, e.g. --distill kd:1 "
                    "(loss = alpha * CE + weight * KD)")
    pr.add_argument("--temperature", "-T", type=float, help="temperature of --distill losses (default: 1 for "
                    "segmentation, 4 for classification)")
    _threads_arg(pr)

    _pipeline_commands(add)
    _deploy_commands(add)
    _serving_commands(add)

    from slimcv.cli_flags import CHECK_DATA, EVAL, MODELS
    from slimcv.config import CheckDataConfig, EvalConfig, ModelsConfig

    e = add("eval", "Evaluate a run folder, weights file or model on a dataset's validation split.")
    _model_args(e)
    e.add_argument("data_spec", nargs="?", metavar="data", help=argparse.SUPPRESS)  # the older positional form of --data, still read
    add_flags(e, EVAL, EvalConfig)

    c = add("check-data", "Scan a dataset: samples, sizes, class frequencies and problems.")
    c.add_argument("spec")
    add_flags(c, CHECK_DATA, CheckDataConfig)

    m = add("models", "List the models slimcv can build.")
    add_flags(m, MODELS, ModelsConfig)
    add("datasets", "List the dataset specs slimcv understands.")
    return p


# the commands whose --threads is not a stage setting: main() applies it to torch and to child processes
PROCESS_THREADS = ("prune", "eval", "export", "run")


def _threads_arg(sp: argparse.ArgumentParser, help: str = "intra-op threads (default: torch's)") -> None:
    sp.add_argument("--threads", type=int, metavar="N", help=help)


def _pipeline_commands(add) -> None:
    """run, compress, demo."""
    r = add("run", "Run a recipe: its stages in order; finished stages are skipped, interrupted ones resumed.")
    r.add_argument("recipe", help="recipe YAML file (see recipes/ and docs/recipes.md)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value: STAGE.KEY=V (distill.epochs=5) or a top-level key (data.size=64)")
    from slimcv.cli_flags import DEMO, RUN, add_flags
    from slimcv.config import DemoConfig, RunOptions

    add_flags(r, RUN, RunOptions)

    cp = add("compress", "Make a model N times faster on this machine within an accuracy budget: time the source on "
             "every runtime and as INT8, pruned copies and efficient students, distil those that meet the target, "
             "keep the most accurate; export it and report.")
    cp.add_argument("source", nargs="?", help="trained model folder (as for prune, quantize, export ...)")
    cp.add_argument("--model", help="a model name or package.module:factory with --weights, or a bare name to train "
                    "first on --data (a model folder works here too)")
    cp.add_argument("--weights", help="local weights file of a trained --model NAME")
    cp.add_argument("--data", help="dataset spec; for a model folder, where its data is now (its recorded size, "
                    "batch size and augmentations stay; default: its own data settings)")
    target = cp.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-speedup", type=float, metavar="N", help="N times lower batch-1 latency than the "
                        "source in ONNX Runtime FP32 on this machine")
    target.add_argument("--target-latency", type=float, metavar="MS", help="batch-1 latency on this machine, in "
                        "milliseconds")
    for gone in ("--target-size", "--target-macs"):
        target.add_argument(gone, type=float, metavar="N", help=argparse.SUPPRESS)
    cp.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    from slimcv.cli_flags import COMPRESS, add_flags
    from slimcv.config import CompressConfig

    add_flags(cp, COMPRESS, CompressConfig)
    cp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other search setting, "
                    "e.g. --set proxy_epochs=2 --set space.prune_ratios=[0.5]")
    cp.add_argument("--dry-run", action="store_true", help="print the target, the budget and where results go; "
                    "write nothing")

    dm = add("demo", "The promise on built-in data in minutes: a teacher compressed to 1.6x its speed on this machine, "
             "a student distilled with images without labels, an HTML report.")
    add_flags(dm, DEMO, DemoConfig)
    dm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the demo recipe")



def _deploy_commands(add) -> None:
    """export, quantize, bench, report."""
    ex = add("export", "Export a model to ONNX and check it in ONNX Runtime against PyTorch on real samples.")
    _model_args(ex)
    ex.add_argument("--data", help="dataset spec for the check samples and the sidecar (default: the run's own)")
    ex.add_argument("--num-classes", type=int, help="classes when SOURCE is a model name without --data")
    ex.add_argument("--out", "-o", default="model.onnx", help="ONNX file to write, or a folder to write "
                    "model.onnx in (its .onnx.json sidecar goes beside it)")
    from slimcv.cli_flags import EXPORT, add_flags
    from slimcv.config import ExportConfig

    add_flags(ex, EXPORT, ExportConfig)
    _threads_arg(ex)

    q = add("quantize", "INT8 by static PTQ (calibrated), dynamic or QAT; every model scored and timed as deployed.")
    _model_args(q)
    q.add_argument("--data", help="dataset spec (default: the model folder's own data settings)")
    from slimcv.cli_flags import QUANTIZE, add_flags
    from slimcv.config import QuantizeConfig

    add_flags(q, QUANTIZE, QuantizeConfig)

    b = add("bench", "Cost of models: params, size, MACs, latency per runtime, throughput, peak memory (interleaved).")
    b.add_argument("sources", nargs="*", help="run folders, quantize folders, .onnx files or model names")
    b.add_argument("--model", help="also measure this architecture (a name or package.module:factory), with --weights")
    b.add_argument("--weights", help="local weights file for --model")
    b.add_argument("--size", "--input-size", dest="input_size", type=int, nargs="+", metavar="N",
                   help="H W of the input (needed for model names); --input-size is the same flag")
    b.add_argument("--num-classes", type=int, help="classes of a model given by name (default: its builder's)")
    from slimcv.config import BenchConfig
    from slimcv.cli_flags import BENCH, REPORT

    add_flags(b, BENCH, BenchConfig)

    rp = add("report", "One HTML page + Markdown comparing runs: table, Pareto plots, per-class, confusion, overlays.")
    rp.add_argument("runs", nargs="+", help="run folders written by train, distill, prune or quantize")
    from slimcv.config import ReportConfig

    add_flags(rp, REPORT, ReportConfig)
    rp.add_argument("--remeasure", action="store_true", help="time every model again in one interleaved run")



def _serving_commands(add) -> None:
    """predict, serve: run a deployed model (an .onnx file with its sidecar, or a quantize folder); no torch."""
    pd = add("predict", "Predict images, folders or globs with a deployed model: masks and overlays, or labels "
             "with top-k scores.")
    pd.add_argument("artifact", help="an .onnx file with its .onnx.json sidecar, or a quantize folder")
    pd.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs")
    from slimcv.cli_flags import PREDICT, SERVE, add_flags
    from slimcv.deploy.batch import PredictConfig
    from slimcv.deploy.server import ServeConfig

    add_flags(pd, PREDICT, PredictConfig)

    sv = add("serve", "Serve a deployed model over HTTP: POST /predict, GET /health, GET /metrics; micro-batched.")
    sv.add_argument("artifact", help="an .onnx file with its .onnx.json sidecar, or a quantize folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    add_flags(sv, SERVE, ServeConfig)


def _train_config(args: argparse.Namespace) -> dict[str, Any]:
    from slimcv.cli_flags import TRAIN, values
    from slimcv.config import read_yaml, set_by_path

    merged: dict[str, Any] = read_yaml(args.config) if args.config else {}
    _merge(merged, values(args, TRAIN))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SlimcvError(f"--set {item!r} needs KEY=VALUE, e.g. --set optim.lr=0.01.")
        set_by_path(merged, key.strip(), value)
    return merged


def _merge(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _distill_config(args: argparse.Namespace) -> dict[str, Any]:
    from slimcv.cli_flags import DISTILL, values as flag_values

    values = _train_config(args)
    _merge(values, flag_values(args, DISTILL))
    if args.loss:
        losses = []
        for item in args.loss:
            name, _, weight = item.partition(":")
            spec: dict[str, Any] = {"name": name, "weight": _weight(item, weight, "--loss")}
            if args.temperature is not None:
                spec["temperature"] = args.temperature
            losses.append(spec)
        values["losses"] = losses
    elif args.temperature is not None:
        values["losses"] = [{**spec, "temperature": args.temperature} for spec in values.get("losses", [{"name": "kd"}])]
    return values


def _weight(item: str, weight: str, flag: str) -> float:
    if not weight:
        return 1.0
    try:
        return float(weight)
    except ValueError:
        raise SlimcvError(f"{flag} {item}: the weight after ':' must be a number, e.g. {flag} kd:1.0.") from None


def _size(size: Sequence[int] | None):
    if size is None:
        return None
    from slimcv.cli_flags import check_size

    return check_size(size)


def _compress(args: argparse.Namespace) -> int:
    """compress: the measured search; exit status 1 when the target is missed (a script can tell)."""
    from slimcv.cli_flags import COMPRESS, values
    from slimcv.pipeline.compress import compress

    if args.target_size or args.target_macs:
        raise SlimcvError("compress searches for a latency target (--target-speedup N or --target-latency MS); to "
                          "prune toward a size or MACs target use `slimcv prune --remove FRACTION --target "
                          "params|macs`.")
    if args.epochs is not None:
        raise SlimcvError("compress sizes each candidate's training from the time budget: give --budget-minutes "
                          "(and --set proxy_epochs=N for the ranking runs) instead of --epochs.")
    from slimcv.config import set_by_path

    if args.source and args.model:
        raise SlimcvError(f"Give the model once: a folder ({args.source}) or --model {args.model}, not both.")
    if not (args.source or args.model):
        raise SlimcvError("slimcv compress needs a model: a model folder, or --model NAME --weights FILE.")
    args.model = args.model or args.source
    options = values(args, COMPRESS)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SlimcvError(f"--set {item!r} needs KEY=VALUE, e.g. --set proxy_epochs=2.")
        set_by_path(options, key.strip(), value)
    _use_threads(options.get("threads", 1))
    r = compress(args.model, args.data, weights=args.weights, target_speedup=args.target_speedup,
                 target_latency=args.target_latency, dry_run=args.dry_run, **options)
    if args.dry_run:
        return 0
    if r.file is not None:
        print(f"deploy: {r.file}  (slimcv serve {r.file}; slimcv predict {r.file} IMAGES)")
    if r.report is not None:
        print(f"report: {r.report}")
    return 0 if r.met else 1


def _use_threads(n: int | None) -> None:
    """--threads N for this process (torch's intra-op pool) and the processes it starts (OMP_NUM_THREADS)."""
    if n is None:
        return
    if n < 1:
        raise SlimcvError(f"--threads must be at least 1, got {n}.")
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def _run(args: argparse.Namespace) -> int:
    if args.command in PROCESS_THREADS:
        _use_threads(args.threads)
    if args.command in MODEL_COMMANDS:
        _run_model_command(args)
    elif args.command == "train":
        from slimcv.engine.train import train

        values = _train_config(args)
        with _run_folder_lock(values, args):
            train(values)
    elif args.command == "distill":
        from slimcv.distill.distill import distill

        values = _distill_config(args)
        with _run_folder_lock(values, args):
            distill(values)
    elif args.command == "run":
        from slimcv.pipeline.runner import run

        from slimcv.cli_flags import RUN, values
        from slimcv.config import RunOptions

        opts = RunOptions(**values(args, RUN))
        run(args.recipe, args.set, out_dir=opts.out_dir, until=opts.until, dry_run=opts.dry_run)
    elif args.command == "compress":
        return _compress(args)
    elif args.command == "demo":
        from slimcv.pipeline.demo import demo

        from slimcv.cli_flags import DEMO, values
        from slimcv.config import DemoConfig

        opts = DemoConfig(**values(args, DEMO))
        demo(opts.data, out_dir=opts.out_dir, quick=opts.quick, threads=opts.threads, overrides=args.set)
    elif args.command == "report":
        from slimcv.report.report import report

        from slimcv.cli_flags import REPORT, values

        options = values(args, REPORT)
        if args.remeasure:
            options["measure"] = "all"
        report(args.runs, **options)
    elif args.command == "predict":
        return _predict(args)
    elif args.command == "serve":
        from slimcv.deploy.server import ServeConfig, serve

        from slimcv.cli_flags import SERVE, values

        serve(args.artifact, host=args.host, port=args.port, workers=args.workers,
              cfg=ServeConfig(**values(args, SERVE)))
    elif args.command == "check-data":
        return 1 if _check_data(args) else 0
    elif args.command == "models":
        from slimcv.cli_flags import MODELS, values

        _list_models(values(args, MODELS).get("task"))
    elif args.command == "datasets":
        _list_datasets()
    return 0


MODEL_COMMANDS = ("prune", "eval", "export", "quantize", "bench")


def _run_model_command(args: argparse.Namespace) -> None:
    """The commands that take a model as SOURCE or --model NAME --weights FILE."""
    if args.command == "prune":
        from slimcv.prune.prune import prune

        distill = [{"name": n, "weight": _weight(f"{n}:{w}", w, "--distill"),
                    **({"temperature": args.temperature} if args.temperature is not None else {})}
                   for n, _, w in (item.partition(":") for item in args.distill or [])]
        from slimcv.cli_flags import PRUNE, values

        source, weights = _model_source(args)
        options = {"out_dir": "runs/prune", **values(args, PRUNE), "distill": distill}
        with _run_folder_lock(options, args):
            prune(source, _run_data(source, args.data), weights=weights, **options)
    elif args.command == "eval":
        from slimcv.engine.evaluation import evaluate_model

        source, weights = _model_source(args)
        data = _eval_data(args, source)
        opts = _eval_options(args)
        evaluate_model(source, data, weights=weights, out=opts.out, device=opts.device, batch_size=opts.batch_size)
    elif args.command == "export":
        from slimcv.export.onnx import export

        source, weights = _model_source(args)
        from slimcv.cli_flags import EXPORT, values

        export(source, args.out, args.data, num_classes=args.num_classes, weights=weights, **values(args, EXPORT))
    elif args.command == "quantize":
        from slimcv.quantize.quantize import quantize

        from slimcv.cli_flags import QUANTIZE, values

        source, weights = _model_source(args)
        options = {"out_dir": "runs/quantize", **values(args, QUANTIZE)}
        with _run_folder_lock(options, args):
            quantize(source, _run_data(source, args.data), weights=weights, **options)
    elif args.command == "bench":
        from slimcv.bench.bench import bench

        sources: list[Any] = list(args.sources)
        if args.weights and not args.model:
            raise SlimcvError("--weights needs the architecture too: add --model NAME (or package.module:factory).")
        if args.model:
            sources.insert(0, (args.model, args.weights) if args.weights else args.model)
        from slimcv.cli_flags import BENCH, values

        bench(sources, input_size=_size(args.input_size), num_classes=args.num_classes, **values(args, BENCH))


def _run_folder_lock(values: dict[str, Any], args: argparse.Namespace):
    """The lock `slimcv run` takes, on the folder train/distill write; --resume needs a run to continue."""
    from pathlib import Path

    from slimcv.pipeline.runner import run_lock

    out = Path(values.get("out_dir") or f"runs/{args.command}")
    if values.get("resume") and not (out / LAST_JSON).is_file():
        raise SlimcvError(f"--resume: {out} holds no checkpoint to continue from (no last.json); drop --resume "
                          "to start a new run there, or give the run's folder with --out-dir.")
    return _locked(out, run_lock)


@contextlib.contextmanager
def _locked(out, run_lock):
    """Hold the run lock on ``out``; a folder made only for the lock is removed again when the command fails."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(out):
            yield
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _model_source(args: argparse.Namespace) -> tuple[str, str | None]:
    """(model source, weights) from SOURCE / --model / --weights, the same for every command."""
    from pathlib import Path

    source, model, weights = args.source, getattr(args, "model", None), getattr(args, "weights", None)
    from slimcv.artifact import is_weights_file

    if model and source and is_weights_file(source):
        source, weights = None, weights or source  # `cmd weights.pth --model NAME`
    if model and source:
        raise SlimcvError(f"Give the model once: a folder ({source}) or --model {model}, not both.")
    if weights and not model and not (source and Path(source).is_dir()):
        raise SlimcvError("--weights needs the architecture too: add --model NAME (or package.module:factory).")
    if not (model or source):
        raise SlimcvError(f"slimcv {args.command} needs a model: a model folder, or --model NAME --weights FILE.")
    if source and not Path(source).exists() and (Path(source).suffix or "/" in source) and ":" not in source:
        raise SlimcvError(f"{source} does not exist; give a model folder written by slimcv, an .onnx file where "
                          "the command takes one, or --model NAME --weights FILE.")
    return (model or source), weights


def _run_data(source: str, spec: str | None):
    from slimcv.artifact import run_data_config

    data = run_data_config(source, spec) if source and __import__("pathlib").Path(source).is_dir() else None
    if data is not None:
        return data
    if spec is None:
        raise SlimcvError(f"Give --data SPEC: {source} carries no data settings of its own (a slimcv model folder "
                          "has them).")
    return {"spec": spec}


def _eval_options(args: argparse.Namespace):
    from slimcv.cli_flags import EVAL, values
    from slimcv.config import EvalConfig, build_config

    return build_config(EvalConfig, values(args, EVAL), "eval options")


def _eval_data(args: argparse.Namespace, source: str):
    from pathlib import Path

    from slimcv.artifact import run_data_config
    from slimcv.config import DataConfig

    opts = _eval_options(args)
    spec = opts.data or args.data_spec
    data = run_data_config(source, spec) if Path(source).is_dir() else None
    if data is None:
        if spec is None:
            raise SlimcvError(f"Give --data SPEC: {source} carries no data settings of its own (a slimcv model "
                              "folder has them).")
        return DataConfig(spec=spec, size=opts.size, val_split=opts.split)
    update = {"val_split": opts.split, **({"eval_size": opts.size} if opts.size else {})}
    return DataConfig(**{**data, **update})


def _predict(args: argparse.Namespace) -> int:
    """Write the predictions and print a summary; exit status 1 when some images could not be read."""
    from slimcv.deploy.batch import predict_files

    from slimcv.cli_flags import PREDICT, values

    r = predict_files(args.artifact, args.inputs, **values(args, PREDICT))
    rate = f" ({len(r.records) / r.seconds:.1f} images/s)" if r.seconds else ""
    overlays = values(args, PREDICT).get("overlays", True)
    what = "masks and overlays" if r.task == "segmentation" and overlays else \
        "masks" if r.task == "segmentation" else "boxes" if r.task == "detection" else "labels"
    took = f"{r.seconds:.1f} s" if r.seconds >= 1 else f"{1000 * r.seconds:.0f} ms"
    n = len(r.records)
    print(f"predicted {n} image{'' if n == 1 else 's'} in {took}{rate}: {what} in {r.out_dir}")
    for s in r.skipped[:10]:
        print(f"  skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if r.skipped:
        print(f"slimcv: {len(r.skipped)} of {len(r.skipped) + len(r.records)} images could not be read and were skipped (listed in "
              f"{r.out_dir}/predict.json).", file=sys.stderr)
    return 1 if r.skipped else 0


def _common(counts: dict[str, int], shown: int = 4) -> str:
    """The most frequent entries of a count table, and how many others there are."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k}: {v}" for k, v in top[:shown])
    return text + (f" and {len(top) - shown} other sizes" if len(top) > shown else "")


def _check_data(args: argparse.Namespace) -> int:
    """Print the scan; returns the number of problems found (the exit status is 1 when there are any)."""
    from dataclasses import asdict

    from slimcv._console import print_table
    from slimcv._io import atomic_write_json
    from slimcv.data import build_dataset, parse_spec
    from slimcv.data._registry import DATASETS
    from slimcv.data.check import scan

    from slimcv.cli_flags import CHECK_DATA, values
    from slimcv.config import CheckDataConfig, build_config

    opts = build_config(CheckDataConfig, values(args, CHECK_DATA), "check-data options")
    # detection loaders read every annotation up front: strict=False lists each bad file instead of stopping
    lenient = {"strict": False} if DATASETS.meta(parse_spec(args.spec)[0])["task"] == "detection" else {}
    ds = build_dataset(args.spec, opts.split, **lenient)
    r = scan(ds, args.spec, opts.split, opts.limit, opts.class_weights)
    total = sum(r.class_counts.values()) or 1
    unit = {"segmentation": "pixels", "detection": "boxes"}.get(r.task, "images")
    rows = [(name, n, 100 * n / total, (r.class_weights or [None] * len(r.class_counts))[i])
            for i, (name, n) in enumerate(r.class_counts.items())]
    print_table(f"{args.spec} [{opts.split}]: {r.samples} samples, sizes {_common(r.sizes)}",
                ["class", unit, "%", "weight"], rows)
    if r.task == "segmentation":
        print(f"ignored pixels: {r.ignored}")
    if r.task == "detection":
        print(f"boxes: {r.boxes} ({r.ignored} difficult/crowd), images without boxes: {r.images_without_boxes}, "
              f"box sizes (COCO areas): {r.box_sizes}")
    print(f"problems: {len(r.problems)}")
    for line in r.problems[:20]:
        print(f"  - {line}")
    if opts.out:
        atomic_write_json(opts.out, asdict(r))
    return len(r.problems)


def _list_models(task: str | None) -> None:
    from slimcv._console import print_table
    from slimcv.models import MODELS, list_models

    rows = [(n, MODELS.meta(n)["task"], MODELS.meta(n)["family"]) for n in list_models(task)]
    rows += [row for row in (("timm:NAME", "classification", "timm (extra)"),
                             ("smp:ARCH:ENCODER", "segmentation", "smp (extra)")) if task in (None, row[1])]
    print_table("models", ["name", "task", "family"], rows)


def _list_datasets() -> None:
    from slimcv._console import print_table
    from slimcv.data._registry import DATASETS

    rows = [(n, DATASETS.meta(n)["task"], (DATASETS.get(n).__doc__ or "").strip().splitlines()[0].replace("``", ""))
            for n in DATASETS]
    print_table("dataset specs (NAME:PATH)", ["name", "task", "layout"], rows)


def _record_command(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """The command line, verbatim, as ``command.txt`` in the folder the command wrote (reports quote it)."""
    import shlex
    from pathlib import Path

    if args.command in ("train", "distill"):
        out = _train_config(args).get("out_dir") or f"runs/{args.command}"  # the flag, else the --config file's
    elif args.command in ("prune", "quantize", "compress"):
        out = getattr(args, "cfg__out_dir", None) or f"runs/{args.command}"
    else:  # the flags' config keys: report's out, predict's out_dir
        out = {"report": getattr(args, "cfg__out", None) or "report",
               "predict": getattr(args, "cfg__out_dir", None)}.get(args.command)
    target = Path(str(out)) if out else None
    if target is None or not target.is_dir():
        return
    from slimcv._io import atomic_write_text

    try:
        atomic_write_text(target / "command.txt", shlex.join(["slimcv", *argv]) + "\n")
    except OSError:
        pass  # the record is a courtesy: a read-only folder must not fail a command that worked


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from slimcv.trust import trust_remote_code

    try:
        with trust_remote_code(args.trust_remote_code):
            code = _run(args)
        _record_command(args, argv)
        return code
    except SlimcvError as e:
        if args.debug:
            raise
        print(f"slimcv: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        import errno

        if not args.debug and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            print(f"slimcv: error: the disk is full{where}; free some space or write elsewhere (-o).", file=sys.stderr)
            return 2
        if args.debug or e.filename is None:
            raise
        # a path the user gave cannot be written or read (permissions, a file where a folder should be, ...)
        print(f"slimcv: error: cannot use {e.filename}: {(e.strerror or str(e)).lower()}; choose a path you can "
              "write (--out-dir) or fix it.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "run the same command again" if args.command in ("run", "compress", "demo") else "run again with --resume"
        print(f"slimcv: interrupted; {again} to continue from the last checkpoint.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
