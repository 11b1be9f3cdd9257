"""INT8 file size: bytes of the FP32 ONNX file, the INT8 QDQ file as ONNX Runtime writes it, and after compaction.

    python benchmarks/int8_size.py

File sizes depend on the architecture, not on the weights' values, so the networks are built untrained: the
CIFAR ResNet-20 and the CamVid U-Net teacher (width 16) and student (width 4). Each is exported, quantized
with static PTQ (MinMax, per-channel, 8 calibration images) and compacted; the ratio is FP32 bytes over INT8
bytes. Prints a table and writes benchmarks/results/int8_size.json.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

import slimcv
from slimcv._console import print_table
from slimcv.hardware import cpu_features
from slimcv.export.onnx import ExportConfig, export_module
from slimcv.quantize.calibration import ImageCalibrationReader
from slimcv.quantize.compact import compact_onnx
from slimcv.quantize.ptq import quantize_ptq

HERE = Path(__file__).parent
MODELS = {  # name: (registered model, kwargs, classes, input H W)
    "cifar_resnet20": ("resnet20", {}, 10, (32, 32)),
    "camvid_unet_w16": ("unet", {"base_width": 16}, 11, (176, 240)),
    "camvid_unet_w4": ("unet", {"base_width": 4}, 11, (176, 240)),
}


def main() -> None:
    torch.manual_seed(0)
    rows, out = [], {"cpu": cpu_features(), "models": {}}
    for name, (arch, kwargs, classes, hw) in MODELS.items():
        net = slimcv.create_model(arch, classes, **kwargs).eval()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            x = torch.rand(1, 3, *hw)
            fp32 = export_module(net, tmp / "fp32.onnx", [x], task="classification" if arch == "resnet20" else
                                 "segmentation", cfg=ExportConfig(check=False, dynamic_hw=False), meta={}).path
            images = [(torch.rand(3, *hw), 0) for _ in range(8)]
            reader = ImageCalibrationReader(images, 8, "input", [1, 3, *hw])
            int8 = quantize_ptq(fp32, tmp / "int8.onnx", reader, method="minmax")
            raw = int8.stat().st_size
            shutil.copyfile(int8, tmp / "c.onnx")
            small = compact_onnx(tmp / "c.onnx").stat().st_size
            f = fp32.stat().st_size
        params = sum(p.numel() for p in net.parameters())
        out["models"][name] = {"params": params, "fp32_bytes": f, "int8_bytes": raw, "int8_compact_bytes": small,
                               "ratio_before": f / raw, "ratio_after": f / small}
        rows.append((name, params / 1e6, f / 2**10, raw / 2**10, small / 2**10, f / raw, f / small))
    print_table("INT8 file size (KiB)", ["model", "params (M)", "FP32", "INT8 (ORT)", "INT8 compact",
                                         "ratio before", "ratio after"], rows)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "int8_size.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
