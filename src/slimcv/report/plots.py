"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes; every axis names its unit."""
from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402

from slimcv.report.collect import Entry  # noqa: E402
from slimcv.deploy.runtimes import MARKERS

# one marker per row label of the runtime table (deploy.runtimes.row_name); anything else is drawn as "*"
RUNTIME_MARKERS = MARKERS
METRIC_LABEL = {"miou": "validation mIoU (%)", "map": "validation mAP@[.5:.95] (%)",
                "top1": "validation top-1 accuracy (%)"}
PER_CLASS = {"segmentation": "IoU", "detection": "AP"}  # the per-class score of a task (else accuracy)
DPI = 100


def entry_colors(entries: Sequence[Entry]) -> dict[str, str]:
    """One colour per model, the same in every figure and in every report: chosen from the model's name
    (tab20), so "teacher" keeps its colour when another report lists other models; clashes take the next free one."""
    import zlib

    cycle = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20").colors]
    out: dict[str, str] = {}
    for e in entries:
        k = zlib.crc32(e.name.encode()) % len(cycle)
        for step in range(len(cycle)):
            color = cycle[(k + step) % len(cycle)]
            if color not in out.values() or len(out) >= len(cycle):
                break
        out[e.name] = color
    return out


def to_png(fig) -> bytes:
    """Render and close a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal score, one strictly),
    sorted by cost."""
    front = []
    for i, (c, s) in enumerate(points):
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(entries: Sequence[Entry], colors: dict[str, str]) -> bytes | None:
    """Accuracy vs latency (every measured runtime) and accuracy vs file size, the frontier drawn and ringed."""
    metric = next((e.metric_name for e in entries if e.metric is not None), None)
    lat = [(e, rt, v["median"]) for e in entries if e.metric is not None for rt, v in e.latency.items()
           if v.get("median") is not None]
    size = [(e, e.file_bytes / 2**20) for e in entries if e.metric is not None and e.file_bytes]
    panels = [p for p in (("latency", lat), ("size", size)) if p[1]]
    if not panels:
        return None
    n_models = len({e.name for e in entries if e.metric is not None})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.0 + 0.3 * ((n_models + 3) // 4)),
                             squeeze=False)
    for ax, (which, rows) in zip(axes[0], panels):
        if which == "latency":
            pts = [(ms, e.metric) for e, _, ms in rows]
            for (e, rt, ms), (x, y), shift in zip(rows, pts, _spread(pts)):
                ax.scatter(x, y, s=60, color=colors[e.name], marker=RUNTIME_MARKERS.get(rt, "*"), zorder=3,
                           edgecolor="black", linewidth=0.5, transform=_shifted(ax, fig, shift))
            ax.set_xlabel("latency, batch 1, median (ms)")
            ax.set_title("accuracy vs latency")
            labels = [f"{e.name} ({rt})" for e, rt, _ in rows]
        else:
            pts = [(mb, e.metric) for e, mb in rows]
            for (e, _), (x, y), shift in zip(rows, pts, _spread(pts)):
                ax.scatter(x, y, s=60, color=colors[e.name], marker="o", zorder=3, edgecolor="black", linewidth=0.5,
                           transform=_shifted(ax, fig, shift))
            ax.set_xlabel("file size (MiB)")
            ax.set_title("accuracy vs size")
            labels = [e.name for e, _ in rows]
        front = pareto_front(pts)
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.step(fx, fy, where="post", color="black", linewidth=1.2, alpha=0.7, zorder=2, label="Pareto frontier")
        ax.scatter(fx, fy, s=190, facecolors="none", edgecolors="black", linewidth=1.4, zorder=4)
        xs = [p[0] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 8:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.12, y=0.1)
        _label_points(ax, [pts[i] for i in front], [labels[i] for i in front], pts, _spread(pts))  # the rest: legend
        ax.set_ylabel(METRIC_LABEL.get(metric, "validation metric (%)"))
        ax.grid(True, alpha=0.3)
        handles = [plt.Line2D([], [], color="black", linewidth=1.2, label="Pareto frontier (ringed, named)")]
        if which == "latency":
            handles += [plt.Line2D([], [], linestyle="", marker=m, color="gray", label=rt)
                        for rt, m in RUNTIME_MARKERS.items() if any(r == rt for _, r, _ in rows)]
            if any(r not in RUNTIME_MARKERS for _, r, _ in rows):
                handles.append(plt.Line2D([], [], linestyle="", marker="*", color="gray", label="other runtime"))
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    shown = list(dict.fromkeys(e.name for e in entries if e.metric is not None))
    fig.legend(handles=[plt.Line2D([], [], linestyle="", marker="o", markersize=8, color=colors[n], label=n)
                        for n in shown], loc="lower center", ncol=min(4, len(shown)), fontsize=8, frameon=False,
               title="models", title_fontsize=8.5)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(shown) + 3) // 4), 1, 1))
    return to_png(fig)


KIND_COLORS = {"source": "#4c4c4c", "pruned": "#1f77b4", "student": "#2ca02c"}


def search_figure(rows: Sequence[dict], budget_ms: float, metric: str, source_metric: float | None = None,
                  winner: str | None = None, max_drop: float | None = None) -> bytes | None:
    """A latency-budget search at a glance: every trained candidate's accuracy against its measured latency,
    coloured by kind (source, pruned, student), the budget as a vertical line, the source's accuracy (and the
    allowed drop) as horizontal lines, the frontier drawn and the winner named. ``rows`` are dicts with
    ``key``, ``kind``, ``label`` (runtime), ``latency_ms`` and ``metric``; rows without a metric are left out."""
    rows = [r for r in rows if r.get("metric") is not None and r.get("latency_ms")]
    if not rows:
        return None
    pts = [(r["latency_ms"], r["metric"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8.0, 5.4))
    shifts = _spread(pts)
    for r, (x, y), shift in zip(rows, pts, shifts):
        ax.scatter(x, y, s=60, color=KIND_COLORS.get(r["kind"], "#ff7f0e"), marker=RUNTIME_MARKERS.get(r["label"], "*"),
                   zorder=3, edgecolor="black", linewidth=0.5, transform=_shifted(ax, fig, shift))
    front = pareto_front(pts)
    ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color="black", linewidth=1.0,
            alpha=0.6, zorder=2)
    ax.axvline(budget_ms, color="#d62728", linestyle="--", linewidth=1.2, zorder=1)
    if source_metric is not None:
        ax.axhline(source_metric, color="0.3", linestyle=":", linewidth=1.0, zorder=1)
        if max_drop is not None:
            ax.axhspan(source_metric - max_drop, source_metric, color="#2ca02c", alpha=0.08, zorder=0)
    xs = [p[0] for p in pts] + [budget_ms]
    if min(xs) > 0 and max(xs) / min(xs) > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.12, y=0.12)
    named = sorted(set(front) | {i for i, r in enumerate(rows) if r["key"] == winner})
    labels = [rows[i]["key"] + (" (chosen)" if rows[i]["key"] == winner else "") for i in named]
    if winner is not None:
        for i in named:
            if rows[i]["key"] == winner:
                ax.scatter(*pts[i], s=260, facecolors="none", edgecolors="#d62728", linewidth=1.8, zorder=4)
    _label_points(ax, [pts[i] for i in named], labels, pts, shifts)
    ax.set_xlabel("latency, batch 1, median (ms), measured before training")
    ax.set_ylabel(METRIC_LABEL.get(metric, "validation metric (%)"))
    ax.set_title("latency-budget search: every trained candidate")
    ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], linestyle="", marker="o", color=c, label=k) for k, c in KIND_COLORS.items()
               if any(r["kind"] == k for r in rows)]
    handles += [plt.Line2D([], [], linestyle="", marker=m, color="gray", label=k) for k, m in RUNTIME_MARKERS.items()
                if any(r["label"] == k for r in rows)]
    handles.append(plt.Line2D([], [], color="#d62728", linestyle="--", label=f"budget {budget_ms:.3g} ms"))
    if source_metric is not None:
        handles.append(plt.Line2D([], [], color="0.3", linestyle=":", label="source's accuracy"
                                  + (f" (band: -{max_drop:g})" if max_drop is not None else "")))
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
    fig.tight_layout()
    return to_png(fig)


def _spread(pts: Sequence[tuple[float, float]], tol: float = 0.004) -> list[float]:
    """Horizontal offsets in points that set apart markers sharing a place (the same file in two rows, or a
    pruned model and its FP32 export), so each stays visible; 0 for a point alone."""
    if not pts:
        return []
    xs, ys = np.asarray([p[0] for p in pts], float), np.asarray([p[1] for p in pts], float)
    span_x, span_y = max(np.ptp(xs), 1e-12), max(np.ptp(ys), 1e-12)
    shifts = [0.0] * len(pts)
    groups: list[list[int]] = []
    for i in range(len(pts)):
        for g in groups:
            j = g[0]
            if abs(xs[i] - xs[j]) <= tol * span_x * 10 and abs(ys[i] - ys[j]) <= tol * span_y * 10:
                g.append(i)
                break
        else:
            groups.append([i])
    for g in groups:
        for k, i in enumerate(g):
            shifts[i] = (k - (len(g) - 1) / 2) * 7.0 if len(g) > 1 else 0.0
    return shifts


def _shifted(ax, fig, points: float):
    if not points:
        return ax.transData
    return matplotlib.transforms.offset_copy(ax.transData, fig=fig, x=points, y=0, units="points")


def _label_points(ax, pts: Sequence[tuple[float, float]], labels: Sequence[str],
                  markers: Sequence[tuple[float, float]] = (), shifts: Sequence[float] = ()) -> list:
    """Name each point where its label overlaps no other label and no marker and stays inside the axes, trying
    places around the point at growing distances; one that finds none is drawn farthest out with a leader line.
    ``markers`` (data coordinates, ``shifts`` in points as drawn) are every point drawn, labelled or not."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0  # display pixels per point
    drawn = np.asarray(markers or pts, dtype=float)
    centres = ax.transData.transform(drawn)
    centres[:, 0] += np.asarray(list(shifts) or [0.0] * len(drawn), dtype=float) * px
    radius = 7.5 * px  # the frontier ring (s=190) is about 14 points across
    taken = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]
    frame = ax.get_window_extent(renderer)
    xy = ax.transData.transform(np.asarray(pts, dtype=float))
    places = [(dx * r, dy * r) for r in (1.0, 1.8, 2.6, 3.6)
              for dx, dy in ((11, 5), (11, -9), (-11, 5), (-11, -9), (0, 13), (0, -15))]
    drawn_labels = []
    for i in sorted(range(len(pts)), key=lambda i: -xy[i][1]):
        for k, (dx, dy) in enumerate(places):
            last = k == len(places) - 1
            ann = ax.annotate(labels[i], pts[i], textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              ha="left" if dx > 0 else ("right" if dx < 0 else "center"), va="center",
                              arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.6} if last else None)
            box = ann.get_window_extent(renderer)
            free = not any(box.overlaps(t) for t in taken)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if (free and inside) or last:
                taken.append(box)
                drawn_labels.append(ann)
                break
            ann.remove()
    return drawn_labels


def per_class_figure(entries: Sequence[Entry], colors: dict[str, str], class_names: Sequence[str],
                     palette: Sequence[Sequence[int]] | None, task: str | None) -> bytes | None:
    """Grouped bars: one group per class, one bar per model; class labels boxed in the dataset's colours."""
    rows = [e for e in entries if e.per_class]
    names = list(class_names) or (list(rows[0].per_class) if rows else [])
    if not rows or not names:
        return None
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(min(12.0, max(8.0, 0.75 * len(names) * max(1, len(rows) / 2.5))), 5.0))
    x = np.arange(len(names))
    for i, e in enumerate(rows):
        vals = [e.per_class.get(n) for n in names]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [np.nan if v is None else v for v in vals], width,
               color=colors[e.name], label=e.name, edgecolor="black", linewidth=0.3)
    ax.set_xticks(x, names, rotation=30, ha="right")
    if palette:
        for label, rgb in zip(ax.get_xticklabels(), palette):
            label.set_bbox({"facecolor": np.array(rgb) / 255, "edgecolor": "none", "pad": 2})
            label.set_color("white" if _luma(rgb) < 140 else "black")
    score = PER_CLASS.get(task or "", "accuracy")
    ax.set_ylabel(f"{score} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-class {score} on the validation set")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    fig.tight_layout()
    return to_png(fig)


def confusion_figure(mats: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str]) -> bytes | None:
    """Row-normalised confusion matrices side by side: each row shows where one true class's pixels went (%)."""
    mats = [(n, np.asarray(m, dtype=np.float64)) for n, m in mats if m is not None]
    if not mats:
        return None
    k = len(class_names) or mats[0][1].shape[0]
    size = max(4.5, 0.5 * k + 2)
    fig, axes = plt.subplots(1, len(mats), figsize=(size * len(mats) + 1, size), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats):
        norm = 100 * m / np.clip(m.sum(1, keepdims=True), 1, None)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
        names = list(class_names) or [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=8 if k <= 12 else 6.5,
                            color="white" if norm[i, j] > 55 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (%)")
    fig.tight_layout()
    return to_png(fig)


def curves_figure(entries: Sequence[Entry], colors: dict[str, str]) -> bytes | None:
    """Training loss and validation metric against epoch, one line per model; fine-tuning (after pruning or for
    QAT) on its own row, since its epochs restart at 1 and are a few, not a continuation of training."""
    trained = [e for e in entries if e.curves and e.kind in ("train", "distill")]
    tuned = [e for e in entries if e.curves and e.kind not in ("train", "distill")]
    groups = [(g, label) for g, label in ((trained, "training"), (tuned, "fine-tuning")) if g]
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False)
    for (group, label), (ax_loss, ax_val) in zip(groups, axes):
        _curves(group, colors, ax_loss, ax_val, label)
    fig.tight_layout()
    return to_png(fig)


def _curves(rows: Sequence[Entry], colors: dict[str, str], ax_loss, ax_val, label: str) -> None:
    metric = None
    for e in rows:
        ep = [r["epoch"] for r in e.curves if "loss" in r.get("train", {})]
        ax_loss.plot(ep, [r["train"]["loss"] for r in e.curves if "loss" in r.get("train", {})],
                     color=colors[e.name], label=e.name, marker="o" if len(ep) <= 5 else None, markersize=5)
        name = e.metric_name
        val = [(r["epoch"], r["val"][name]) for r in e.curves if name and name in r.get("val", {})]
        if val:
            metric = metric or name
            ax_val.plot(*zip(*val), color=colors[e.name], marker="o", markersize=5, label=e.name)
    ax_loss.set_xlabel(f"{label} epoch")
    ax_loss.set_ylabel("training loss (objective, unitless)")
    ax_loss.set_title(f"{label}: loss")
    ax_val.set_xlabel(f"{label} epoch")
    ax_val.set_ylabel(METRIC_LABEL.get(metric, "validation metric (%)"))
    ax_val.set_title(f"{label}: validation metric")
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def _luma(rgb: Sequence[int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def pr_figure(entries: Sequence[Entry], colors: dict[str, str], class_names: Sequence[str]) -> bytes | None:
    """Precision against recall at IoU 0.5 of each detector: one panel per class (up to 6), mean over classes last."""
    rows = [e for e in entries if isinstance(e.metrics.get("pr_curve"), dict)]
    if not rows:
        return None
    names = [n for n in class_names if any(e.metrics["pr_curve"].get(n) for e in rows)][:6]
    panels = names + (["mean over classes"] if len(names) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for e in rows:
            curves = e.metrics["pr_curve"]
            picked = [curves.get(panel)] if panel != "mean over classes" else list(curves.values())
            picked = [c for c in picked if c]
            if not picked:
                continue
            recall = np.asarray(picked[0]["recall"], float)
            prec = np.nanmean([[np.nan if p is None else p for p in c["precision"]] for c in picked], axis=0)
            ax.plot(recall, prec * 100, color=colors[e.name], label=e.name, linewidth=1.4)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 101)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("precision (%) at IoU 0.5")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return to_png(fig)
