"""The ``quantize`` stage: FP32 ONNX, INT8 by static PTQ / dynamic / QAT, each scored as deployed, runtime chosen.

Output folder (read by the report and recipe stages)::

    model_fp32.onnx (+ .json sidecar)   model_int8_<minmax|entropy|percentile|dynamic|qat>.onnx (+ .json)
    quantize.json = {"stage": "quantize", "task", "source", "data", "models": [{"name", "path", "precision",
                     "runtime", "metrics", "file_bytes", "latency_ms": {"median", "p90"}, "threads"}],
                     "recommendation": {"name", "why"}, "notes": [...]}
"""
from __future__ import annotations

import copy
import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from slimcv._console import console, print_table
from slimcv._io import atomic_dir, atomic_write_json
from slimcv.bench.latency import eager_runner, time_interleaved
from slimcv.bench.size import file_bytes, state_dict_bytes
from slimcv.config import QuantizeConfig, ScheduleConfig
from slimcv.artifact import (check_exists, is_onnx, load_inputs, metric_key, read_json, read_run_config,
                             stage_config)
from slimcv.errors import SlimcvError
from slimcv.data import DataBundle, as_bundle, build_dataset
from slimcv.deploy.chooser import Candidate, choose_runtime
from slimcv.deploy import runtimes
from slimcv.deploy.deployed import DeployedModule, deployed_runner
from slimcv.hardware import cpu_features
from slimcv.engine.loop import SupervisedLoss, evaluate
from slimcv.engine.train import class_weights, finetune_config, fit, make_eval_loader
from slimcv.export.onnx import ExportConfig, export_module, sample_batches, sidecar_meta, write_sidecar
from slimcv.quantize.calibration import ImageCalibrationReader
from slimcv.quantize.compact import compact_onnx
from slimcv.quantize.dynamic import dynamic_applicability, quantize_dyn
from slimcv.quantize.ptq import quantize_ptq
from slimcv.quantize.qat import export_qat, prepare_qat
from slimcv.run_folder import QUANTIZE_JSON


@dataclass
class QuantizeResult:
    """Every model built, scored and timed as deployed; the recommended one's file and metrics."""

    out_dir: Path
    models: list[dict[str, Any]]
    recommendation: dict[str, str]
    notes: list[str]

    @property
    def recommended(self) -> dict[str, Any]:
        return next(m for m in self.models if m["name"] == self.recommendation["name"])

    @property
    def path(self) -> Path:
        """The recommended model's file (the FP32 ONNX file when PyTorch itself was recommended)."""
        m = self.recommended
        in_torch = runtimes.get(m["runtime"]).runs == "module"
        return self.out_dir / ("model_fp32.onnx" if in_torch else m["path"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.recommended["metrics"]


def quantize(source: Any, data: Any = None, *, weights: str | None = None, **options: Any) -> QuantizeResult:
    """Export to ONNX, build the INT8 variants, evaluate and time each as deployed, recommend one.

    ``source`` is a QuantizeConfig (or its dict), or the model: an ``nn.Module``, a model folder, a model name
    or ``package.module:factory`` with ``weights``, or an existing ``.onnx`` file (exported anywhere);
    ``options`` are QuantizeConfig fields, e.g. ``quantize(net, data=(train_ds, val_ds), out_dir="int8")``."""
    model = options.pop("model", None)  # older form: quantize(cfg, data, model=module)
    if isinstance(data, Dataset):  # one dataset: its images calibrate, and the same images score
        data = (data, data)
    cfg, model_source = stage_config(QuantizeConfig, source, options, "quantize", model_field="source")
    if model_source is None:  # the config names the model
        model_source = model if model is not None else cfg.source
        if data is None and ("data" in cfg.model_fields_set or not Path(cfg.source).is_dir()):
            data = cfg.data
    if is_onnx(model_source):
        from slimcv.deploy.deployed import DeployedModule

        net, spec = None, None
        if data is None:
            raise SlimcvError(f"Quantizing {model_source} needs data for calibration and scoring: give --data SPEC "
                              "(or data=(train_dataset, val_dataset)).")
        check_exists(model_source, "ONNX file")
        data = as_bundle(data, model=DeployedModule(model_source))
        if cfg.qat_epochs:
            raise SlimcvError("QAT fine-tunes the PyTorch model, which an .onnx file does not hold; give the model "
                              "folder (or --model NAME --weights FILE) instead, or set qat_epochs 0.")
        cfg = cfg.model_copy(update={"eager": False})
    else:
        loaded, data = load_inputs(model_source, data, weights=weights)
        net, spec = loaded.model.cpu().eval(), loaded.spec
        if data.task == "detection":
            net = _detection_network(net, data, cfg)
    threads = cfg.threads or torch.get_num_threads()
    out = Path(cfg.out_dir)
    notes: list[str] = []
    cpu = cpu_features()
    if cpu.get("vnni") is False and not cfg.reduce_range:
        notes.append("this CPU has no VNNI: full-range int8 weights saturate ONNX Runtime's u8s8 kernels; "
                     "keep reduce_range on")
    elif cpu.get("vnni") and cfg.reduce_range and cfg.calibration:
        notes.append("this CPU has VNNI, so full-range weights would not saturate here; reduce_range keeps the "
                     "INT8 files exact on AVX2-only CPUs too and cost no accuracy in slimcv's benchmarks")
    with atomic_dir(out, owned_by=QUANTIZE_JSON) as tmp:
        if net is None:
            files = _build_variants_onnx(Path(model_source), data, cfg, tmp, notes)
        else:
            files = _build_variants(net, spec, data, cfg, tmp, notes)
        models = _evaluate_all(net, files, data, cfg, threads, tmp)
        key = metric_key(data.task)
        rec = choose_runtime([Candidate(m["name"], m["metrics"][key], m["latency_ms"]["median"], m["runtime"],
                                        m["precision"]) for m in models], cfg.max_drop, metric_name=key)
        recommendation = {"name": rec.name, "why": rec.why}
        atomic_write_json(tmp / QUANTIZE_JSON, {
            "stage": "quantize", "task": data.task, "source": cfg.source, "data": data.config.model_dump(mode="json"),
            "models": models, "recommendation": recommendation, "notes": notes, "threads": threads, "cpu": cpu,
            "config": cfg.model_dump(mode="json")})
    _print(models, key, recommendation, notes)
    result = QuantizeResult(out, models, recommendation, notes)
    console.print(f"saved every model in {out}; serving or predicting from the folder uses the recommended one "
                  f"({result.path.name}): slimcv serve {out}, slimcv predict {out} IMAGES -o predictions",
                  highlight=False, soft_wrap=True)
    return result


def _detection_network(net: nn.Module, data: DataBundle, cfg: QuantizeConfig) -> nn.Module:
    """A detector as deployed: its static network (boxes and scores per anchor), which is what gets quantized,
    scored (by mAP, boxes selected beside it) and timed in every runtime."""
    from slimcv.artifact import data_input_shape
    from slimcv.models.detection import DenseDetector, deployed_size

    if cfg.qat_epochs:
        raise SlimcvError("Quantization-aware training is not available for detectors; set qat_epochs 0 (the "
                          "post-training INT8 files are scored by mAP as deployed).")
    return DenseDetector(net, deployed_size(net, data_input_shape(data)[-2:])).eval()


def calibration_set(data: DataBundle):
    """The training split read with the validation transforms (no augmentation): what calibration should see."""
    if data.calibration is not None:
        return data.calibration
    if data.config.spec.startswith("python:"):
        return data.train  # a user's own dataset: calibrate on it as given
    val = data.val.dataset if isinstance(data.val, Subset) else data.val
    return build_dataset(data.config.spec, data.config.train_split, transform=val.transform, **data.config.options)


def _build_variants(net: nn.Module, spec: dict, data: DataBundle, cfg: QuantizeConfig, tmp: Path,
                    notes: list[str]) -> list[dict[str, Any]]:
    """Write model_fp32.onnx and every requested INT8 file with sidecars; return name/path/precision records."""
    ecfg = ExportConfig(opset=cfg.opset, samples=8)
    meta = sidecar_meta(data, data.task, spec["name"], cfg.source)
    if data.task == "detection":
        from slimcv.export.onnx import detection_network

        net, ecfg = detection_network(net, data, ecfg, meta)
    fp32 = export_module(net, tmp / "model_fp32.onnx", sample_batches(data, ecfg, net), task=data.task, cfg=ecfg,
                         meta=meta)
    files = [{"name": "fp32", "file": fp32.path.name, "precision": "fp32"}]
    files += _int8_files(fp32.path, fp32.meta, "input", data, cfg, tmp, notes)
    if cfg.qat_epochs:
        path = _qat(net, spec, data, cfg, tmp)
        files.append(_variant(path, fp32.meta, "int8_qat", {"calibration": "qat", "qat_epochs": cfg.qat_epochs}))
    return files


def _build_variants_onnx(source: Path, data: DataBundle, cfg: QuantizeConfig, tmp: Path,
                         notes: list[str]) -> list[dict[str, Any]]:
    """The INT8 variants of an existing FP32 ONNX file (exported by slimcv or anything else)."""
    from slimcv.deploy.predictor import find_sidecar

    fp32 = tmp / "model_fp32.onnx"
    _copy_onnx(source, fp32)
    side = find_sidecar(source)
    meta = read_json(side) if side else {**sidecar_meta(data, data.task, source.stem, str(source)),
                                         "task": data.task, "precision": "fp32", "input_name": _input_name(fp32)}
    write_sidecar(fp32, meta)
    return [{"name": "fp32", "file": fp32.name, "precision": "fp32"},
            *_int8_files(fp32, meta, _input_name(fp32), data, cfg, tmp, notes)]


MIN_OPSET = 13  # per-channel QDQ (DequantizeLinear with an axis) needs opset 13


def _copy_onnx(source: Path, dest: Path) -> None:
    """Copy an ONNX file with its weights: torch's exporter writes them beside it (``model.onnx.data``), so the
    tensors are read from there and stored inside the copy (or, past protobuf's 2 GiB, in one file beside it)."""
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=True)
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise SlimcvError(f"Cannot read {source} with its weights ({e}); keep the files its exporter wrote beside "
                          "it (e.g. model.onnx.data) in the same folder.") from e
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise SlimcvError(f"{source} uses ONNX opset {opset}; INT8 quantization needs opset {MIN_OPSET} or newer: "
                          "upgrade it with onnx.version_converter.convert_version(onnx.load(path), 17), or export "
                          "again with opset_version=17.")
    if model.ByteSize() < 2**31 - 2**24:
        onnx.save_model(model, str(dest))
    else:
        onnx.save_model(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dest.name + ".data")


def _int8_files(fp32: Path, meta: dict, input_name: str, data: DataBundle, cfg: QuantizeConfig, tmp: Path,
                notes: list[str]) -> list[dict[str, Any]]:
    """The post-training INT8 files of an FP32 ONNX file: static QDQ per calibration method, dynamic, and
    OpenVINO IR by NNCF where OpenVINO and NNCF are installed."""
    files = []
    reader = None
    keep = _kept_fp32(fp32, cfg)
    if cfg.calibration or cfg.nncf:
        reader = ImageCalibrationReader(calibration_set(data), cfg.calibration_images, input_name,
                                        _input_shape(fp32))
    for method in cfg.calibration:
        path = quantize_ptq(fp32, tmp / f"model_int8_{method}.onnx", reader, method=method,
                            per_channel=cfg.per_channel, reduce_range=cfg.reduce_range, exclude=keep,
                            percentile=cfg.percentile, float_tail=meta.get("task") == "detection")
        files.append(_variant(path, meta, f"int8_{method}", {"calibration": method,
                              "calibration_images": len(reader), "exclude": keep}))
    if cfg.dynamic:
        app = dynamic_applicability(fp32)
        notes.append(f"dynamic: {app.note}")
        if app.ops:
            path = quantize_dyn(fp32, tmp / "model_int8_dynamic.onnx", per_channel=cfg.per_channel,
                                reduce_range=cfg.reduce_range)
            files.append(_variant(path, meta, "int8_dynamic", {"calibration": "dynamic"}))
    if cfg.nncf:
        files += _nncf_file(fp32, meta, reader, tmp, notes, keep)
    return files


def _kept_fp32(fp32: Path, cfg: QuantizeConfig) -> list[str]:
    """The ONNX nodes every INT8 file keeps in FP32: ``exclude``, plus the end layers with ``fp32_ends``."""
    import onnx

    from slimcv.quantize.ptq import end_layers, resolve_exclude

    if not cfg.exclude and not cfg.fp32_ends:
        return []
    model = onnx.load(str(fp32))
    return sorted(set(resolve_exclude(model, cfg.exclude)) | set(end_layers(model) if cfg.fp32_ends else []))


def _nncf_file(fp32: Path, meta: dict, reader: ImageCalibrationReader, tmp: Path,
               notes: list[str], keep: list[str]) -> list[dict[str, Any]]:
    """OpenVINO INT8 by NNCF with its defaults: the peer a CPU user would pick, measured beside slimcv's files."""
    from slimcv.quantize.nncf_ptq import quantize_nncf, unavailable

    why = unavailable()
    if why:
        notes.append(f"NNCF INT8 not built: {why}")
        return []
    reader.rewind()
    images = [item for item in iter(lambda: reader.get_next(), None)]
    reader.rewind()
    try:
        path = quantize_nncf(fp32, tmp / "model_int8_nncf.xml", [next(iter(x.values())) for x in images],
                             keep_fp32=keep)
    except SlimcvError as e:  # the peer failing must not cost the user slimcv's own INT8 files
        notes.append(f"NNCF INT8 not built: {e}")
        return []
    write_sidecar(path, {**meta, "precision": "int8", "calibration": "nncf", "calibration_images": len(images),
                         "exclude": keep, "format": runtimes.OPENVINO, "agreement": None})
    return [{"name": NNCF_VARIANT, "file": path.name, "precision": "int8"}]


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path)).graph.input[0].name


def _variant(path: Path, fp32_meta: dict, name: str, extra: dict) -> dict[str, Any]:
    compact_onnx(path)  # the INT8 file as small as its weights allow (short internal names)
    write_sidecar(path, {**fp32_meta, "precision": "int8", **extra, "agreement": None})
    return {"name": name, "file": path.name, "precision": "int8"}


def _qat(net: nn.Module, spec: dict, data: DataBundle, cfg: QuantizeConfig, tmp: Path) -> Path:
    """Fine-tune with fake quantization through the engine, then export the real INT8 QDQ model."""
    example = data.val[0][0][None]
    qmodel = prepare_qat(net, example)
    # the in-training evaluation reads a few training images: observers must not see the validation set
    n = min(len(data.train), 2 * data.config.batch_size)
    probe = Subset(data.train, range(0, len(data.train), max(1, len(data.train) // n))[:n])  # spread: sorted sets
    qdata = dataclasses.replace(data, val=probe)
    same = _source_objective(cfg.source) if Path(cfg.source).is_dir() else {}  # the loss the model was trained with (class weights, smoothing)
    tcfg = finetune_config(spec, data.config, tmp / "qat_run", resume=False, epochs=cfg.qat_epochs,
                           optim=cfg.qat_optim, schedule=ScheduleConfig(name="cosine"), device="cpu", seed=cfg.seed,
                           progress=cfg.progress, tensorboard=False, keep_checkpoints=1,
                           amp="none", channels_last=False, **same)  # fake quantization runs in FP32
    objective = SupervisedLoss(data.info.ignore_index, class_weights(tcfg, data), tcfg.label_smoothing)
    result = fit(qmodel, qdata, tcfg, objective, model_spec={**spec, "qat": True})
    return export_qat(result.model, example, tmp / "model_int8_qat.onnx", opset=cfg.opset,
                      dynamic_hw=data.task == "segmentation")


def _source_objective(source: str) -> dict[str, Any]:
    """class_weights and label_smoothing from the source run's config.json (none for a bare model name)."""
    run = read_run_config(source)
    if run is None:
        return {}
    return {k: run[k] for k in ("class_weights", "label_smoothing") if run.get(k) is not None}


NNCF_VARIANT = "int8_nncf"  # OpenVINO INT8 by NNCF: the peer a CPU user would pick


def model_name(variant: str, runtime: str) -> str:
    """A quantize.json model's name: its file's variant, and the runtime when not ONNX Runtime (int8_nncf_openvino)."""
    return variant + ("" if runtime == runtimes.ORT else f"_{runtime}")


def _module_row(rt: runtimes.Runtime) -> str:
    """The row name of the PyTorch model itself in a runtime: fp32_pytorch, bf16_pytorch, fp32_pytorch_cuda."""
    return f"{rt.precision}_pytorch" + ("_cuda" if rt.device == "cuda" else "")


def _evaluate_all(net: nn.Module, files: list[dict], data: DataBundle, cfg: QuantizeConfig, threads: int,
                  tmp: Path) -> list[dict[str, Any]]:
    """Score each file in each runtime on the validation split, then time all of them interleaved at batch 1."""
    loader = make_eval_loader(data.val, data.config.eval_batch_size or data.config.batch_size, data.config.loader_workers(),
                              data.info.ignore_index)
    example = data.val[0][0][None]
    ev = dict(task=data.task, num_classes=data.num_classes, ignore_index=data.info.ignore_index,
              class_names=data.info.class_names)
    onnx_runtimes = runtimes.available("onnx")
    records, runners = [], {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if cfg.eager:
            size = state_dict_bytes(net)
            for rt in runtimes.available("module"):  # eager FP32, and bf16 / CUDA where this machine has them
                name = _module_row(rt)
                with console.status(f"evaluating {name}") if cfg.progress else _null():
                    module = net if rt.name == runtimes.EAGER else DeployedModule(copy.deepcopy(net), rt.name, threads)
                    metrics = evaluate(module, loader, torch.device("cpu"), **ev)
                records.append({"name": name, "path": cfg.source, "precision": rt.precision, "runtime": rt.name,
                                "metrics": metrics, "file_bytes": size})
                runners[name] = eager_runner(net, example) if rt.name == runtimes.EAGER else \
                    deployed_runner(copy.deepcopy(net), example, rt.name, threads)
        for f in files:
            for rt in onnx_runtimes:
                if not runtimes.pairs_with(rt, f["precision"]) or not runtimes.reads(rt, f["file"]):
                    continue
                name = model_name(f["name"], rt.name)
                path = tmp / f["file"]
                with console.status(f"evaluating {name}") if cfg.progress else _null():
                    metrics = evaluate(DeployedModule(path, rt.name, threads), loader, torch.device("cpu"), **ev)
                records.append({"name": name, "path": f["file"], "precision": f["precision"], "runtime": rt.name,
                                "metrics": metrics, "file_bytes": file_bytes(path)})
                runners[name] = deployed_runner(path, example, rt.name, threads)
    finally:
        torch.set_num_threads(previous)
    timings = time_interleaved(runners, warmup=3, runs=cfg.latency_runs, threads=threads)
    runners.clear()
    gc.collect()  # release the runtimes' sessions (and OpenVINO's compiled models) before anything else runs
    for r in records:
        t = timings[r["name"]]
        r["latency_ms"] = {"median": t.median_ms, "p90": t.p90_ms}
        r["threads"] = threads
        r["batch"] = 1
    return records


def _input_shape(path: Path) -> list:
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def _null():
    import contextlib

    return contextlib.nullcontext()


def _print(models: list[dict], key: str, rec: dict, notes: list[str]) -> None:
    base = next((m for m in models if m["name"] == "fp32"), models[0])
    rows = []
    for m in models:
        rows.append((m["name"], m["runtime"], m["metrics"][key], m["metrics"][key] - base["metrics"][key],
                     m["file_bytes"] / 2**20, base["file_bytes"] / m["file_bytes"], m["latency_ms"]["median"],
                     base["latency_ms"]["median"] / m["latency_ms"]["median"]))
    threads = models[0]["threads"]
    print_table(f"FP32 vs INT8 as deployed (batch 1, {threads} threads)",
                ["model", "runtime", key, "Δ pt vs fp32", "MiB", "smaller vs fp32", "ms", "speed-up vs fp32 (ort)"],
                rows)
    for n in notes:
        console.print(f"note: {n}")
    console.print(f"recommended: [bold]{rec['name']}[/] — {rec['why']}")
