"""The flag tables: every row sets a real config key, and parsed flags become the config the stage validates."""
import pytest

from slimcv.cli import _parser
from slimcv.cli_flags import (BENCH, CHECK_DATA, COMPRESS, DEMO, DISTILL, EVAL, EXPORT, MODELS, PREDICT, PRUNE, QUANTIZE,
                               REPORT, RUN, SERVE, TRAIN, _field, values)
from slimcv.config import (BenchConfig, CheckDataConfig, CompressConfig, DemoConfig, DistillConfig, EvalConfig,
                           ModelsConfig, PruneConfig, QuantizeConfig as _Q, ReportConfig, RunOptions, TrainConfig,
                           build_config)
from slimcv.deploy.batch import PredictConfig
from slimcv.deploy.server import ServeConfig
from slimcv.export.onnx import ExportConfig
from slimcv.quantize.quantize import QuantizeConfig

TABLES = [(TRAIN, TrainConfig), (DISTILL, DistillConfig), (PRUNE, PruneConfig), (QUANTIZE, QuantizeConfig),
          (EXPORT, ExportConfig), (COMPRESS, CompressConfig), (BENCH, BenchConfig), (REPORT, ReportConfig),
          (PREDICT, PredictConfig), (SERVE, ServeConfig), (RUN, RunOptions), (DEMO, DemoConfig),
          (CHECK_DATA, CheckDataConfig), (EVAL, EvalConfig), (MODELS, ModelsConfig)]


@pytest.mark.parametrize("flags,schema", TABLES)
def test_every_row_names_a_field_of_its_config(flags, schema):
    from slimcv.config import WEIGHT_ALIASES

    missing = [f.key for f in flags if _field(schema, f.key) is None and f.key not in WEIGHT_ALIASES]
    assert not missing


def test_parsed_flags_build_the_config():
    args = _parser().parse_args(["quantize", "runs/x", "--per-tensor", "--qat-lr", "0.01", "--calibration", "entropy",
                                 "--no-eager", "-o", "out"])
    cfg = build_config(QuantizeConfig, {"source": "runs/x", **values(args, QUANTIZE)})
    assert cfg.per_channel is False and cfg.qat_optim.name == "sgd" and cfg.qat_optim.lr == 0.01
    assert cfg.calibration == ("entropy",) and cfg.eager is False and cfg.out_dir == "out"
    assert cfg.reduce_range is True  # an unset flag leaves the config's default
    args = _parser().parse_args(["prune", "runs/x", "--remove", "0.5", "--lr", "0.01", "--ignore", "head", "fc"])
    cfg = build_config(PruneConfig, {"source": "runs/x", **values(args, PRUNE)})
    assert cfg.remove == 0.5 and cfg.optim.lr == 0.01 and cfg.ignore == ("head", "fc")
    args = _parser().parse_args(["train", "--size", "32", "48", "--out-dir", "123", "--channels-last"])
    v = values(args, TRAIN)
    assert v == {"data": {"size": [32, 48]}, "out_dir": "123", "channels_last": True}  # "123" stays a path


def test_threads_and_out_dir_are_spelled_the_same_on_every_command_that_has_them():
    for command in ("train", "distill", "prune", "quantize"):
        sub = _parser()._subparsers._group_actions[0].choices[command]
        opts = {o for a in sub._actions for o in a.option_strings}
        assert {"--out-dir", "-o"} <= opts, command


def test_every_command_that_computes_takes_threads_and_the_same_size_flag():
    subs = _parser()._subparsers._group_actions[0].choices
    for name, sub in subs.items():
        opts = {o for a in sub._actions for o in a.option_strings}
        if name not in ("check-data", "models", "datasets"):
            assert "--threads" in opts, name
    bench = _parser().parse_args(["bench", "resnet20", "--size", "32", "32"])
    assert bench.input_size == [32, 32] and _parser().parse_args(["bench", "x", "--input-size", "8"]).input_size == [8]


def test_threads_for_a_process_command_reach_torch_and_child_processes(monkeypatch):
    import os

    import torch

    from slimcv.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    previous = torch.get_num_threads()
    try:
        assert main(["eval", "missing/run", "--threads", "1"]) == 2  # applied before the command fails
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert main(["prune", "missing/run", "--threads", "0"]) == 2
    finally:
        torch.set_num_threads(previous)


def test_listings_match_the_task_and_print_no_markup(capsys):
    from slimcv.cli import main

    assert main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "smp:ARCH:ENCODER" in out and "timm:NAME" not in out
    assert main(["datasets"]) == 0
    assert "``" not in capsys.readouterr().out


def test_alpha_is_stated_and_ce_and_kd_weight_are_unambiguous_aliases():
    base = {"teacher": "runs/t", "model": "unet", "data": {"spec": "synthetic-shapes"}}
    cfg = build_config(DistillConfig, {**base, "ce_weight": 0.3, "kd_weight": 2.0})
    assert cfg.alpha == 0.3 and [(s.name, s.weight) for s in cfg.losses] == [("kd", 2.0)]
    args = _parser().parse_args(["distill", "--teacher", "runs/t", "--model", "unet", "--ce-weight", "0.5",
                                 "--kd-weight", "3", "--loss", "kd", "--loss", "cwd:1"])
    from slimcv.cli import _distill_config

    cfg = build_config(DistillConfig, _distill_config(args))
    assert cfg.alpha == 0.5 and [s.weight for s in cfg.losses] == [3.0, 3.0]
    from slimcv.errors import SlimcvError

    with pytest.raises(SlimcvError, match="alpha and ce_weight are the same setting"):
        build_config(DistillConfig, {**base, "alpha": 1.0, "ce_weight": 0.5})
    pruned = build_config(PruneConfig, {"source": "runs/t", "distill": [{"name": "kd"}], "ce_weight": 0.2,
                                        "kd_weight": 0.7})
    assert pruned.alpha == 0.2 and pruned.distill[0].weight == 0.7
    with pytest.raises(SlimcvError, match="kd_weight needs a KD loss"):
        build_config(PruneConfig, {"source": "runs/t", "kd_weight": 0.7})
    help_text = _parser()._subparsers._group_actions[0].choices["distill"].format_help()
    assert "alpha * CE" in help_text and "--ce-weight" in help_text


def _options(command: str) -> set[str]:
    sub = _parser()._subparsers._group_actions[0].choices[command]
    return {o for a in sub._actions for o in a.option_strings}


def test_the_same_thing_has_the_same_flag_on_every_command():
    for command in ("eval", "export", "bench", "report", "predict", "prune", "quantize", "compress", "check-data"):
        assert "-o" in _options(command), command  # an output is -o everywhere
    assert "--class-weights" in _options("check-data") and "--weights" not in _options("check-data")
    args = _parser().parse_args(["compress", "runs/teacher", "--target-speedup", "2"])  # positional, as elsewhere
    assert args.source == "runs/teacher"
    assert _parser().parse_args(["bench", "runs/x"]).cfg__runtimes is None  # every runtime this machine has
    assert CompressConfig(target_speedup=2).max_drop == _Q(source="x").max_drop == 1.0  # one accuracy budget


def test_the_functions_behind_the_commands_default_as_their_config_models_do():
    """The flags are made from the config models; the Python functions must not drift from them."""
    import dataclasses
    import inspect

    from slimcv.bench.bench import bench
    from slimcv.deploy.batch import predict_files
    from slimcv.report.report import report

    for fn, schema in ((bench, BenchConfig), (report, ReportConfig), (predict_files, PredictConfig)):
        fields = ({f.name: f.default for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema)
                  else {k: v.default for k, v in schema.model_fields.items()})
        for name, p in inspect.signature(fn).parameters.items():
            if name in fields and p.default is not inspect.Parameter.empty:
                default = tuple(p.default) if isinstance(p.default, list) else p.default
                assert default == fields[name], (fn.__name__, name)


def test_every_option_of_every_command_comes_from_a_config_model_table():
    """Apart from the model source and data, --set overrides, flags kept for old spellings and a few that are no
    stage setting (the server's address, lists of losses parsed by hand), every option a command takes is a row
    of its table, so its help and default are its config model's."""
    from slimcv import cli_flags

    rows = {name for table in (v for k, v in vars(cli_flags).items() if k.isupper() and isinstance(v, tuple))
            for f in table if isinstance(f, cli_flags.Flag) for name in f.names}
    shared = {"-h", "--help", "--debug", "--trust-remote-code", "--set", "--model", "--weights", "--config",
              "--num-classes", "--size", "--input-size", "--remeasure", "--target-speedup", "--target-latency",
              "--target-size", "--target-macs", "--epochs", "--dry-run", "--data", "--teacher-epochs", "--host",
              "--port", "--workers", "--distill", "--temperature", "-T", "--loss"}
    for command, sub in _parser()._subparsers._group_actions[0].choices.items():
        loose = {o for a in sub._actions for o in a.option_strings} - rows - shared
        loose = {o for o in loose if not (o.startswith("--no-") and "--" + o[5:] in rows)}  # --flag/--no-flag
        assert not loose, (command, sorted(loose))
