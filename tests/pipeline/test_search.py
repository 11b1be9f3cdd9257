"""The candidate search: latencies measured before training, the budget applied to them."""
from __future__ import annotations

import pytest
import torch

from slimcv.errors import SlimcvError
from slimcv.models import create_model
from slimcv.pipeline import search as S


@pytest.fixture(scope="module")
def measured():
    torch.manual_seed(0)
    source = create_model("unet", 3, base_width=16, depth=2).eval()
    example = torch.randn(1, 3, 64, 64)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort",), sensitivity_drops=())
    cands = S.enumerate_candidates(source, example, 3, "segmentation", space)
    ref = S.measure(cands, example, runs=8)
    return [c for c, _ in cands], ref


def test_a_space_rounds_pruned_channels_to_its_own_multiple():
    # a width-8 network pruned at multiples of 8 keeps its 8-channel layers whole: a smaller multiple shrinks them
    source = create_model("unet", 3, base_width=8, depth=3).eval()
    example = torch.randn(1, 3, 32, 32)
    macs = {}
    for r in (8, 4):
        space = S.SearchSpace(prune_ratios=(0.7,), students=[], runtimes=("ort",), sensitivity_drops=(), round_to=r)
        (_, _), (cand, net) = S.enumerate_candidates(source, example, 3, "segmentation", space)
        widths = {m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels != 3}
        assert all(w % r == 0 for w in widths) and cand.build["round_to"] == r
        macs[r] = cand.macs
    assert macs[4] < 0.8 * macs[8]


def _trained_source(tmp_path, *, size: int, width: int, **settings) -> dict:
    """A U-Net (depth 2) trained one epoch on 16 synthetic images into tmp_path/source; returns its data."""
    import slimcv

    data = {"spec": "synthetic-shapes", "options": {"size": size, "length": 16}, "batch_size": 8, "workers": 0,
            "val_subset": 8}
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": width, "depth": 2}, "data": data, "epochs": 1,
                  "out_dir": str(tmp_path / "source"), "progress": False, "tensorboard": False, **settings})
    return data


def test_every_candidate_is_measured_against_the_source_in_one_run(measured):
    cands, ref = measured
    assert [c.name for c in cands] == ["source", "pruned_0.5", "unet-base_width4-depth2"]
    assert all(c.latency_ms > 0 and c.params > 0 and c.macs > 0 for c in cands)
    source = next(c for c in cands if c.key == S.REFERENCE)
    assert source.latency_ms == ref and source.speedup == 1.0
    student = cands[-1]
    assert student.macs < 0.1 * source.macs and student.build == {"model": "unet",
                                                                  "model_kwargs": {"base_width": 4, "depth": 2}}
    assert student.speedup > 1.5  # 16x fewer MACs: clearly faster even on a noisy machine


def test_the_budget_keeps_what_meets_it(measured):
    cands, ref = measured
    budget = S.within_budget(cands, ref, target_speedup=1.5)
    assert budget == pytest.approx(ref / 1.5)
    assert all(c.meets == (c.latency_ms <= budget) for c in cands)
    assert not next(c for c in cands if c.kind == "source").meets and cands[-1].meets
    assert S.best_runtime_each(cands)[0].latency_ms <= budget
    assert S.within_budget(cands, ref, target_latency_ms=1e9) == 1e9 and all(c.meets for c in cands)
    with pytest.raises(SlimcvError, match="one target"):
        S.within_budget(cands, ref)


def test_default_students_suit_the_task():
    seg = S.default_students("segmentation", (176, 240))
    assert ("lraspp_mobilenet", {"width_mult": 0.5, "input_scale": 0.5}) in seg
    assert [n for n, _ in S.default_students("classification", (32, 32))] == ["resnet8", "resnet14", "resnet20"]


def test_compress_to_a_budget_returns_a_candidate_that_meets_it_in_time(tmp_path):
    import json
    import time

    from slimcv.artifact import load_run_model
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=16)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})], runtimes=("ort",),
                          sensitivity_drops=())
    t = time.perf_counter()
    r = compress_to_budget(tmp_path / "source", data, target_speedup=1.5, budget_minutes=0.5, space=space,
                           finalists=1, out_dir=tmp_path / "out", latency_runs=8, progress=False)
    assert time.perf_counter() - t < 30 + 30  # the budget, plus at most one run's overrun
    assert r.winner is not None and r.winner.meets and r.winner.latency_ms <= r.budget_ms
    assert r.winner.kind != "source"  # the source cannot be 1.5x faster than itself
    model, spec = load_run_model(r.folder)
    assert model is not None
    saved = json.loads((tmp_path / "out" / "compress_search.json").read_text())
    assert {c["name"] for c in saved["candidates"]} == {"source", "pruned_0.5", "unet-base_width4-depth2"}
    assert all(c["latency_ms"] > 0 for c in saved["candidates"])
    assert saved["winner"]["name"] == r.winner.name and saved["reference"]["latency_ms"] == r.reference_ms
    trained = [c for c in saved["candidates"] if c["meets"] and c["kind"] != "source"]
    assert trained and all(c["metric"] is not None for c in trained)
    assert (tmp_path / "out" / "teacher_cache").is_dir()  # students share one cache of the source's maps
    assert (tmp_path / "out" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    phases = saved["phases_seconds"]  # where the time went, phase by phase, adding up to the whole search
    assert {"measure", "proxies", "final_round"} <= set(phases) and all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= saved["seconds"] + 0.5 and sum(phases.values()) > 0.5 * saved["seconds"]


def test_compress_to_a_budget_spends_no_training_when_time_is_up(tmp_path, capsys):
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=32, width=8)
    space = S.SearchSpace(prune_ratios=(), students=[("unet", {"base_width": 2, "depth": 2})], runtimes=("ort",),
                          sensitivity_drops=())
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=0.0, space=space,
                           out_dir=tmp_path / "out", latency_runs=4, progress=False)
    student = next(c for c in r.candidates if c.kind == "student")
    assert student.metric is None and "no time left" in student.notes[0]
    assert r.winner.kind == "source"  # it meets a loose budget and is the only one with a measured metric
    assert not (tmp_path / "out" / "proxy").exists()
    printed = capsys.readouterr()
    assert "measuring the candidates alone took" in printed.err  # said, not left to guess
    assert " s over its 0 min budget (measuring" in printed.out  # the overrun and where it went


def test_cli_search_flags_are_checked(tmp_path, capsys):
    from slimcv.cli import main

    assert main(["compress", "--model", str(tmp_path), "--target-latency", "5"]) == 2
    assert "records no data settings" in capsys.readouterr().err  # a default budget: only the data is missing
    assert main(["compress", "--model", str(tmp_path), "--target-speedup", "2", "--budget-minutes", "0"]) == 2
    err = capsys.readouterr().err
    assert "budget_minutes" in err and "greater than 0" in err and "Traceback" not in err


def test_int8_candidates_are_timed_as_nncf_files_and_scored_as_deployed(tmp_path):
    import json

    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=16)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[], runtimes=("ort", "openvino"), sensitivity_drops=(),
                          int8_always=True)
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=3, space=space,
                           finalists=0, out_dir=tmp_path / "out", latency_runs=4, progress=False)  # proxies only
    keys = {c.key: c for c in r.candidates}
    assert {"source/ort-fp32", "source/openvino-fp32", "source/openvino-int8", "pruned_0.5/openvino-int8"} <= set(keys)
    assert all(c.latency_ms > 0 for c in r.candidates)
    source_int8 = keys["source/openvino-int8"]
    assert source_int8.metric is not None and (tmp_path / "out" / "int8" / "source").is_dir()
    q = json.loads((tmp_path / "out" / "int8" / "source" / "quantize.json").read_text())
    nncf_row = next(m for m in q["models"] if m["name"] == "int8_nncf_openvino")
    assert source_int8.metric == nncf_row["metrics"]["miou"]  # the quantized file's own score, not the source's
    assert keys["pruned_0.5/openvino-int8"].metric is not None  # trained, then quantized
    # any budget is met here: the pruned copy's INT8 file keeps its first and last layers in FP32, the peer's not
    assert keys["pruned_0.5/openvino-int8"].build["fp32_ends"] is True and "fp32_ends" not in source_int8.build
    side = json.loads((tmp_path / "out" / "int8" / "pruned_0.5" / "model_int8_nncf.xml.json").read_text())
    assert len(side["exclude"]) == 2 and not json.loads(
        (tmp_path / "out" / "int8" / "source" / "model_int8_nncf.xml.json").read_text())["exclude"]
    best = max((c for c in r.candidates if c.metric is not None), key=lambda c: c.metric)
    assert r.winner.metric == best.metric and r.folder.is_dir()
    saved = json.loads((tmp_path / "out" / "compress_search.json").read_text())
    assert {c["precision"] for c in saved["candidates"]} == {"fp32", "int8"}


def test_the_summary_signs_a_loss_as_negative(capsys):
    from slimcv.pipeline.budget import BudgetResult, _print

    src = S.Candidate("source", kind="source", runtime="ort", params=100, macs=1000, latency_ms=10.0, speedup=1.0,
                      metric=53.26)
    won = S.Candidate("pruned_0.5", kind="pruned", runtime="openvino", build={"prune_ratio": 0.5}, params=25, macs=250,
                      latency_ms=1.6,
                      speedup=6.3, meets=True, metric=51.89)
    _print(BudgetResult(won, None, [src, won], 10.0, 1.7, 60.0, source_metric=53.26, closest=won, source_best=src),
           "miou")
    out = capsys.readouterr().out
    assert "Target met" in out and "-1.37 pt against the source" in out and "6.30x" in out


def test_sensitivity_guided_copies_are_searched_and_trained(tmp_path):
    import json

    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=16)
    space = S.SearchSpace(prune_ratios=(), students=[], runtimes=("ort",), sensitivity_drops=(100.0,),
                          sensitivity_ratios=(0.5,))
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=2, space=space,
                           finalists=0, out_dir=tmp_path / "out", latency_runs=4, progress=False)
    sens = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    c = next(c for c in r.candidates if c.name == "pruned_sens100")
    # a 100-point allowance lets every analysed layer take the tested ratio
    assert c.build["layer_ratios"] == {layer: 0.5 for layer in sens["curves"]} and len(sens["curves"]) > 3
    source = next(c for c in r.candidates if c.kind == "source")
    assert c.kind == "pruned" and c.macs < 0.5 * source.macs and c.latency_ms > 0
    assert c.metric is not None  # its proxy run pruned it by the same per-layer ratios and fine-tuned it
    pruned = json.loads((tmp_path / "out" / "proxy" / "pruned_sens100" / "prune.json").read_text())
    assert pruned["after"]["macs"] == c.macs


def test_layer_ratios_are_checked_and_rounded():
    from slimcv.prune.structured import check_layer_ratios

    model = create_model("unet", 3, base_width=16, depth=2)
    layer = "encoders.1.0"
    assert check_layer_ratios(model, {layer: 0.3}) == {layer: 0.3}
    rounded = check_layer_ratios(model, {layer: 0.3}, round_to=8)  # 32 channels: keep 22 -> 24
    assert int(32 * (1 - rounded[layer])) == 24
    with pytest.raises(SlimcvError, match="no convolution"):
        check_layer_ratios(model, {"nope": 0.5})
    with pytest.raises(SlimcvError, match="below 1"):
        check_layer_ratios(model, {layer: 1.0})


def test_a_shallower_resnet_inherits_the_sources_blocks():
    source = create_model("resnet20", 3).eval()
    student = create_model("resnet8", 3).eval()
    copied, total = S.inherit_weights(source, student)
    assert copied == total  # stem, the first block of each stage, the classifier: every tensor of ResNet-8
    assert torch.equal(student.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    assert torch.equal(student.fc.weight, source.fc.weight)
    unet = create_model("unet", 3, base_width=4, depth=2)
    copied, total = S.inherit_weights(create_model("unet", 3, base_width=16, depth=2), unet)
    assert copied == 1 and total > 10  # other widths share only the class layer's bias: not inherited


def test_inherited_students_are_named_and_start_from_the_source(tmp_path):
    import slimcv
    from safetensors.torch import load_file

    from slimcv.artifact import load_run_model
    from slimcv.pipeline.budget import compress_to_budget

    data = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 16}, "batch_size": 8,
            "workers": 0, "val_subset": 8}
    slimcv.train({"model": "resnet20", "data": data, "epochs": 1, "out_dir": str(tmp_path / "source"),
                  "progress": False, "tensorboard": False})
    space = S.SearchSpace(prune_ratios=(), students=S.default_students("classification", (32, 32)),
                          runtimes=("ort",), sensitivity_drops=())
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=2, space=space,
                           finalists=0, out_dir=tmp_path / "out", latency_runs=4, progress=False)
    names = {c.name for c in r.candidates}
    assert {"resnet8-inherited", "resnet14-inherited"} <= names and "resnet20" not in names
    init = load_file(str(tmp_path / "out" / "proxy" / "resnet8-inherited.init.safetensors"))
    source, _ = load_run_model(tmp_path / "source")
    assert torch.equal(init["layer3.0.conv2.weight"], source.layer3[0].conv2.weight)
    assert next(c for c in r.candidates if c.name == "resnet8-inherited").metric is not None


def test_every_network_is_also_an_int8_candidate_where_openvino_runs():
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    source = create_model("unet", 3, base_width=8, depth=2).eval()
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort", "openvino"), sensitivity_drops=())
    keys = {c.key for c, _ in S.enumerate_candidates(source, torch.randn(1, 3, 32, 32), 3, "segmentation", space)}
    assert {f"{n}/{rt}" for n in ("source", "pruned_0.5", "unet-base_width4-depth2")
            for rt in ("ort-fp32", "openvino-fp32", "openvino-int8")} == keys
    # OpenVINO held to FP32 (where its bf16 does not pay) still runs INT8 files
    space = space.model_copy(update={"runtimes": ("ort", "openvino-f32")})
    keys = {c.key for c, _ in S.enumerate_candidates(source, torch.randn(1, 3, 32, 32), 3, "segmentation", space)}
    assert "pruned_0.5/openvino-int8" in keys and "source/openvino-f32" in keys


def test_a_trained_students_int8_file_is_scored_as_deployed(tmp_path):
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=8)
    space = S.SearchSpace(prune_ratios=(), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort", "openvino"), int8=("student",), sensitivity_drops=(),
                          int8_always=True)
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=3, space=space,
                           finalists=0, out_dir=tmp_path / "out", latency_runs=4, progress=False)
    int8 = next(c for c in r.candidates if c.key == "unet-base_width4-depth2/openvino-int8")
    assert int8.metric is not None and (tmp_path / "out" / "int8" / "unet-base_width4-depth2").is_dir()


def test_finalists_leave_out_a_candidate_far_behind_the_best_proxy():
    from slimcv.pipeline.budget import choose_finalists

    def cand(name, metric):
        return S.Candidate(name, kind="student", params=1, macs=1, metric=metric)

    lead, close, far, untrained = cand("a", 80.4), cand("b", 77.0), cand("c", 70.0), cand("d", None)
    assert choose_finalists([far, lead, untrained, close], 3, 5.0) == [lead, close]
    assert far.notes == ["not a finalist: its proxy trailed the best by 10.4 pt"] and not close.notes
    assert choose_finalists([far, lead], 2, None) == [lead, far]  # no gap: the n best, as ranked
    assert choose_finalists([far, lead, close], 1, 5.0) == [lead]
    assert choose_finalists([untrained], 2, 5.0) == []


def test_candidates_train_with_the_sources_optimizer_and_hopeless_ones_get_no_int8(tmp_path):
    import json

    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    from slimcv.artifact import read_summary, write_summary
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=8, optim={"name": "adam", "lr": 0.004})
    summary = read_summary(tmp_path / "source")
    summary["metrics"]["miou"] = 99.0  # a source no one-epoch student comes within max_drop + 1 of
    write_summary(tmp_path / "source", summary)
    space = S.SearchSpace(prune_ratios=(), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort", "openvino"), int8=("student",), sensitivity_drops=(), int8_always=True)
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=3, space=space,
                           finalists=0, out_dir=tmp_path / "out", latency_runs=4, progress=False, max_drop=1.0)
    proxy = tmp_path / "out" / "proxy" / "unet-base_width4-depth2"
    assert json.loads((proxy / "config.json").read_text())["optim"]["lr"] == 0.004
    student = [c for c in r.candidates if c.name == "unet-base_width4-depth2" and c.precision == "fp32"]
    assert student[0].metric is not None and 99.0 - student[0].metric > 2.0
    rows = [c for c in r.candidates if c.name == "unet-base_width4-depth2"]  # the note is on its fastest row
    assert any("INT8 not tried" in n for c in rows for n in c.notes)
    assert not (tmp_path / "out" / "int8" / "unet-base_width4-depth2").exists()


def test_finalists_train_on_from_their_proxy_runs(tmp_path):
    import json

    from slimcv.artifact import find_weights, read_model_spec
    from slimcv.pipeline.budget import compress_to_budget

    data = _trained_source(tmp_path, size=64, width=8)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})], runtimes=("ort",),
                          int8=(), sensitivity_drops=())
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=0.6, space=space,
                           finalists=2, finalist_gap=None, out_dir=tmp_path / "out", latency_runs=4, progress=False)
    round1 = {e["candidate"]: e for e in r.log if e["stage"] == "round1"}
    assert set(round1) == {"pruned_0.5", "unet-base_width4-depth2"}, r.log
    out = tmp_path / "out"
    # the pruned copy is fine-tuned further, not pruned again; the student starts from its proxy's weights
    assert read_model_spec(out / "round1" / "pruned_0.5")["finetuned_from"] == str(out / "proxy" / "pruned_0.5")
    student = json.loads((out / "round1" / "unet-base_width4-depth2" / "config.json").read_text())
    assert student["weights"] == str(find_weights(out / "proxy" / "unet-base_width4-depth2"))


def test_successive_halving_drops_a_finalist_that_stops_learning_and_the_leader_gets_the_rest(tmp_path, monkeypatch):
    import time

    from slimcv.pipeline import budget as B

    curves = {"a": [50, 60, 70, 80], "b": [55, 55], "c": [40, 45, 50], "d": [30, 35]}  # b has stopped learning
    calls = []

    def scripted(c, run_dir, epochs, *, start=None, **_):  # the metric each training step would reach
        calls.append((c.name, run_dir.parent.name, epochs))
        return curves[c.name][sum(1 for n, *_ in calls if n == c.name)]

    monkeypatch.setattr(B, "_train", scripted)
    cands = [S.Candidate(n, kind="student", params=1, macs=1, metric=curves[n][0]) for n in "bacd"]
    result = B.BudgetResult(None, None, cands, 1.0, 1.0, 0.0)
    result.log = [{"candidate": n, "stage": "proxy", "setup_seconds": 0.0, "seconds_per_epoch": 1.0} for n in "abcd"]
    folders = {n: tmp_path / n for n in "abcd"}
    B._final_round(B.choose_finalists(cands, 4, None), time.perf_counter() + 100, tmp_path, folders, result, {},
                   B._State(tmp_path, None))
    assert calls[:6] == [("b", "round1", 2), ("a", "round1", 2), ("c", "round1", 2), ("d", "round1", 2),
                         ("a", "round2", 4), ("c", "round2", 4)]
    assert calls[6][:2] == ("a", "final") and calls[6][2] >= 90 and len(calls) == 7  # the rest of the time
    notes = {c.name: c.notes for c in cands}
    assert any("not learning (55.00 -> 55.00)" in n for n in notes["b"])
    assert any("lower half" in n for n in notes["d"]) and any("after round 2" in n for n in notes["c"])
    assert folders["a"] == tmp_path / "final" / "a" and cands[1].metric == 80


def test_the_final_run_is_planned_at_the_pace_of_the_latest_run(tmp_path):
    # the proxy ran at 1 s per epoch; the machine got busier and the candidate's latest run took 4 s per epoch
    import json

    from slimcv.pipeline import budget as B
    from slimcv.run_folder import METRICS_JSONL

    result = B.BudgetResult(None, None, [], 1.0, 1.0, 0.0)
    result.log = [{"candidate": "a", "stage": "proxy", "setup_seconds": 0.0, "seconds_per_epoch": 1.0}]
    c = S.Candidate("a", kind="pruned")
    assert B._epochs_within(c, 40.0, result, {}) == 40
    latest = tmp_path / "round1" / "a"
    latest.mkdir(parents=True)
    (latest / METRICS_JSONL).write_text("\n".join(json.dumps({"epoch": i, "epoch_time_s": 4.0}) for i in (1, 2)))
    assert B._epochs_within(c, 40.0, result, {"a": latest}) == 10


def test_with_cuda_present_candidates_train_on_it_and_are_timed_on_the_cpu(tmp_path, monkeypatch):
    import json

    from slimcv.pipeline import budget as B

    data = _trained_source(tmp_path, size=32, width=4)
    seen = []

    def scripted(c, run_dir, epochs, *, device, **_):  # training itself is not what this checks
        seen.append(device)
        return 50.0

    monkeypatch.setattr(B, "_train", scripted)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a test double for a GPU
    space = S.SearchSpace(prune_ratios=(0.5,), students=[], runtimes=("ort",), int8=(), sensitivity_drops=())
    r = B.compress_to_budget(tmp_path / "source", data, target_latency_ms=1e6, budget_minutes=0.5, space=space,
                             finalists=1, out_dir=tmp_path / "out", latency_runs=3, progress=False)
    assert seen and set(seen) == {"cuda"} and r.train_device == "cuda"
    record = json.loads((tmp_path / "out" / "compress_search.json").read_text())
    assert record["train_device"] == "cuda" and record["latency_measured_on"] == "cpu"
    assert all(c.runtime == "ort" and c.latency_ms > 0 for c in r.candidates)  # timed in ONNX Runtime on the CPU


def _row(name, kind, runtime, precision, ms):
    return S.Candidate(name, runtime=runtime, precision=precision, kind=kind, params=1, macs=1, latency_ms=ms)


def test_int8_is_timed_only_where_it_can_change_the_answer():
    # the source runs 2x faster as INT8 (10 -> 5 ms) and the budget is 2.5 ms
    rows = [_row("source", "source", "ort", "fp32", 10.0), _row("source", "source", "openvino", "int8", 5.0),
            _row("meets", "pruned", "ort", "fp32", 2.0), _row("meets", "pruned", "openvino", "int8", None),
            _row("near", "pruned", "ort", "fp32", 6.0), _row("near", "pruned", "openvino", "fp32", 7.0),
            _row("near", "pruned", "openvino", "int8", None),
            _row("far", "student", "ort", "fp32", 20.0), _row("far", "student", "openvino", "int8", None),
            # a mild pruned copy: 8 / 2 = 4 ms misses the budget of 2.5 ms by more than 25%, but at 1.25x the source's
            # INT8 file (5 ms) it may be the frontier's point on a miss; at 9 ms (4.5 ms as INT8) it would not be
            _row("mild", "pruned", "ort", "fp32", 8.0), _row("mild", "pruned", "openvino", "int8", None),
            _row("milder", "pruned", "ort", "fp32", 9.0), _row("milder", "pruned", "openvino", "int8", None)]
    keep = S.int8_worth_timing([(c, None) for c in rows], budget_ms=2.5)
    assert [c.key for c, _ in keep] == ["near/openvino-int8", "mild/openvino-int8"]  # near: 6 / 2 = 3 ms
    assert rows[2].notes == ["INT8 not timed: its FP32 file already meets the budget"]
    assert "would miss the budget" in rows[7].notes[0] and not rows[4].notes  # 20 / 2 = 10 ms > 1.25 * 2.5 ms
    assert "would miss the budget" in rows[11].notes[0] and not rows[9].notes
    # without the source's INT8 file there is no gain to go by: every network that misses in FP32 is timed
    keep = S.int8_worth_timing([(c, None) for c in rows if c.key != "source/openvino-int8"], budget_ms=2.5)
    assert [c.name for c, _ in keep] == ["near", "far", "mild", "milder"]


def test_int8_files_are_timed_after_fp32_on_the_same_scale(monkeypatch):
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    source = create_model("unet", 3, base_width=16, depth=2).eval()
    example = torch.randn(1, 3, 64, 64)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort", "openvino"), sensitivity_drops=())
    calls = []
    real = S.measure
    monkeypatch.setattr(S, "measure", lambda cands, *a, **k: calls.append([c.key for c, _ in cands])
                        or real(cands, *a, **k))
    everything = S.enumerate_candidates(source, example, 3, "segmentation", space)
    # a budget at the reference's latency: every network meets it in FP32, so no INT8 file is timed but the source's
    timed, ref = S.measure_fp32_first(everything, example, lambda r: r * 10, runs=3)
    assert [c.key for c, _ in timed if c.precision == "int8"] == ["source/openvino-int8"] and len(calls) == 1
    # a budget nothing meets in FP32 but the source's INT8 gain may bring close: the others' INT8 files are timed in
    # a second run with the reference, and put on the first run's scale
    everything = S.enumerate_candidates(source, example, 3, "segmentation", space)
    timed, ref = S.measure_fp32_first(everything, example, lambda r: 1e-6, runs=3)
    # nothing reaches a budget that small; only a pruned copy may still be timed, as a frontier candidate
    assert len(calls) in (2, 3) and all(k.startswith("pruned") or k == S.REFERENCE for k in sum(calls[2:], []))
    del calls[2:]  # the counts below hold either way
    everything = S.enumerate_candidates(source, example, 3, "segmentation", space)

    def just_under_the_fastest(reference):  # called once the FP32 files are timed
        return 0.99 * min(c.latency_ms for c, _ in everything if c.precision == "fp32" and c.latency_ms)

    timed, ref = S.measure_fp32_first(everything, example, just_under_the_fastest, runs=3)
    assert len(calls) == 4 and S.REFERENCE in calls[3] and all(k.endswith("int8") or k == S.REFERENCE for k in calls[3])
    int8 = [c for c, _ in timed if c.precision == "int8" and c.kind != "source"]
    assert "unet-base_width4-depth2" in {c.name for c in int8}  # 1% over the budget in FP32: worth a try
    assert all(c.latency_ms > 0 and c.speedup == pytest.approx(ref / c.latency_ms) for c in int8)
    assert next(c for c, _ in timed if c.key == S.REFERENCE).latency_ms == ref  # the first run's reference stays


def test_the_frontier_copy_is_the_mildest_pruned_one_clearly_faster_than_the_source():
    from slimcv.pipeline.budget import frontier_candidate

    rows = [_row("source", "source", "ort", "fp32", 10.0), _row("source", "source", "openvino", "int8", 6.0),
            _row("student", "student", "ort", "fp32", 2.0),  # meets the 3 ms budget
            _row("p25", "pruned", "ort", "fp32", 8.0), _row("p25", "pruned", "openvino", "int8", 5.5),  # 1.09x
            _row("p35", "pruned", "ort", "fp32", 7.0), _row("p35", "pruned", "openvino", "int8", 4.5),  # 1.33x
            _row("p50", "pruned", "ort", "fp32", 5.0), _row("p50", "pruned", "openvino", "int8", 3.5)]  # 1.71x
    for c, macs in zip(rows, (100, 100, 5, 56, 56, 42, 42, 25, 25)):
        c.macs = macs
    student = rows[2]
    student.metric = 60.0
    pick = frontier_candidate(rows, [student], source_metric=80.0, max_drop=2.0)
    assert pick.key == "p35/openvino-int8"  # p25 is barely faster than the source's INT8 file; p50 prunes more
    assert frontier_candidate(rows, [student], 80.0, None) is None  # no drop given: no frontier to fill
    assert frontier_candidate(rows, [], 80.0, 2.0).key == pick.key  # nothing meets the budget: still trained
    student.metric = 79.0  # a proxy is already within the drop: the finalists get all the time
    assert frontier_candidate(rows, [student], 80.0, 2.0) is None


def test_the_time_of_the_frontier_points_int8_file_is_kept_only_where_it_will_be_made():
    from slimcv.pipeline.budget import BudgetResult, _int8_files_to_make

    fp32, int8 = _row("p35", "pruned", "ort", "fp32", 7.0), _row("p35", "pruned", "openvino", "int8", 4.5)
    r = BudgetResult(None, None, [fp32, int8], 10.0, 3.0, 0.0, source_metric=80.0, max_drop=2.0)
    assert _int8_files_to_make(r.candidates, [], [], int8, r) == 1  # before it trains: its INT8 file may come
    assert _int8_files_to_make(r.candidates, [], [], fp32, r) == 0  # FP32 its fastest: no INT8 file is made
    r.log.append({"candidate": "p35", "stage": "frontier"})
    int8.metric = 70.0  # trained, and hopeless: no INT8 file
    assert _int8_files_to_make(r.candidates, [], [], int8, r) == 0
    int8.metric = 79.0
    assert _int8_files_to_make(r.candidates, [], [], int8, r) == 1


def test_a_search_that_misses_trains_a_slower_pruned_copy_for_the_frontier(tmp_path):
    from slimcv.artifact import load_run_model, read_summary, write_summary
    from slimcv.pipeline.budget import compress_to_budget
    from slimcv.pipeline.compress import fastest_within

    data = _trained_source(tmp_path, size=64, width=16)
    summary = read_summary(tmp_path / "source")
    summary["metrics"]["miou"] = 99.0  # no one-epoch student comes near it: the target is out of reach
    write_summary(tmp_path / "source", summary)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 2, "depth": 2})],
                          runtimes=("ort",), sensitivity_drops=())
    # a budget between the tiny student and the pruned copy (4x fewer MACs than the source, 20x more than the student)
    source, spec = load_run_model(tmp_path / "source")
    nets = S.enumerate_candidates(source, torch.randn(1, 3, 64, 64), spec["num_classes"], "segmentation", space)
    S.measure(nets, torch.randn(1, 3, 64, 64), runs=8)
    ms = {c.name: c.latency_ms for c, _ in nets}
    budget = (ms["unet-base_width2-depth2"] * ms["pruned_0.5"]) ** 0.5
    r = compress_to_budget(tmp_path / "source", data, target_latency_ms=budget, budget_minutes=1.0, space=space,
                           finalists=1, out_dir=tmp_path / "out", latency_runs=8, progress=False, max_drop=2.0,
                           frontier_share=0.2)
    pruned = next(c for c in r.candidates if c.name == "pruned_0.5")
    assert not pruned.meets and pruned.metric is not None and any("frontier point" in n for n in pruned.notes)
    stages = [e["stage"] for e in r.log if e["candidate"] == "pruned_0.5"]
    assert stages == ["frontier", "frontier_on"]  # one epoch measures its pace, then it trains on for what fits
    again = compress_to_budget(tmp_path / "source", data, target_latency_ms=budget, budget_minutes=1.0, space=space,
                               finalists=1, out_dir=tmp_path / "out", latency_runs=8, progress=False, max_drop=2.0,
                               frontier_share=0.2)
    assert {"frontier/pruned_0.5", "frontier_on/pruned_0.5"} <= set(again.reused)  # a restarted search keeps them
    assert next(c for c in again.candidates if c.name == "pruned_0.5").metric == pruned.metric
    assert (tmp_path / "out" / "frontier" / "pruned_0.5").is_dir() and "frontier" in r.phases
    assert not r.met and pruned.speedup > max(c.speedup for c in r.candidates if c.kind == "source")
    # on a miss, the frontier names it wherever it is the fastest within the drop (here: within its own)
    within = fastest_within(r, 99.0 - pruned.metric)
    assert within.name == "pruned_0.5" or within.metric >= pruned.metric and within.speedup >= pruned.speedup


def test_an_int8_file_keeps_its_ends_in_fp32_only_where_that_meets_the_budget():
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    source = create_model("unet", 3, base_width=8, depth=2).eval()
    example = torch.randn(1, 3, 32, 32)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[], runtimes=("ort", "openvino"), int8=("pruned",),
                          sensitivity_drops=())
    cands = [(c, n) for c, n in S.enumerate_candidates(source, example, 3, "segmentation", space)
             if c.key in (S.REFERENCE, "pruned_0.5/openvino-int8")]
    int8 = cands[-1][0]
    S.measure(cands, example, runs=4, budget_of=lambda ref: 0.0)  # nothing meets it: the faster default file
    assert "fp32_ends" not in int8.build and int8.latency_ms > 0
    assert any(n.startswith("INT8 with its first and last layers in FP32: ") and "over the budget" in n
               for n in int8.notes)
    S.measure(cands, example, runs=4, budget_of=lambda ref: 1e9)
    assert int8.build["fp32_ends"] is True and int8.speedup > 0


def test_a_student_chosen_as_int8_with_fp32_ends_trains_as_the_network_it_is(tmp_path):
    from slimcv.pipeline.budget import _train

    data = _trained_source(tmp_path, size=32, width=4)
    c = S.Candidate("unet-base_width2-depth2", runtime="openvino", precision="int8", kind="student",
                    build={"model": "unet", "model_kwargs": {"base_width": 2, "depth": 2}, "fp32_ends": True})
    from slimcv.data import as_bundle

    metric = _train(c, tmp_path / "out" / "proxy" / c.name, 1, bundle=as_bundle(data), folder=tmp_path / "source",
                    task="segmentation", progress=False, threads=1, source_macs=1)
    assert metric is not None and (tmp_path / "out" / "proxy" / c.name / "best.safetensors").is_file()
