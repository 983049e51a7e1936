"""Learned activation shapes y = f(x) next to ReLU, computed by the library's own modules.

Each site's module is rebuilt from the registry with the site's learned parameters, so the curve is
what the converted network computes, not a re-derivation of the formula.
"""

from __future__ import annotations

import numpy as np
import torch

from converters.activations import create_activation
from converters.catalog import get_info

from .plotting import AFTER_COLOR, Figure, new_figure, render

MAX_SITES = 4
MAX_CHANNELS = 4
X_RANGE = (-3.0, 3.0)
POINTS = 601


def _pick(items: list, k: int) -> list:
    """Up to k items spread evenly from first to last (early and deep layers both shown)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def _site_values(report: dict, site: dict, params: dict | None) -> tuple[dict[str, np.ndarray], str] | None:
    """{parameter name: value} of a site: the learned arrays, else report.json's per-key means."""
    keys = site.get("parameters") or []
    if params and keys and all(k in params for k in keys):
        return {k.rsplit(".", 1)[-1]: np.asarray(params[k]) for k in keys}, "learned"
    stats = ((report.get("parameter_stats") or {}).get("final") or {}).get(site.get("name")) or {}
    if all(k in stats for k in keys):
        # Only the mean of a per-channel parameter survives in report.json: one curve, marked so.
        values = {k.rsplit(".", 1)[-1]: np.full(stats[k].get("shape") or [1], stats[k]["mean"]) for k in keys}
        return values, "parameter means"
    return None


def build_module(report: dict, site: dict, values: dict[str, np.ndarray]) -> torch.nn.Module:
    """The site's activation module from the registry, holding `values`."""
    activation = site["replacement"]
    info = get_info(activation)
    size = max((int(np.size(v)) for v in values.values()), default=1)
    granularity = None
    if info.granularities:
        granularity = "channel" if size > 1 or "layer" not in info.granularities else "layer"
    config = report.get("config") or {}
    chosen = config.get("activation_options") or {}
    # The job's fixed options (e.g. negative_slope) apply to its own activation, not to a fallback.
    options = {k: v for k, v in chosen.items() if k in info.options} if activation == config.get("activation") else {}
    cap = 6.0 if site.get("kind") == "relu6" else None
    module = create_activation(activation, size, granularity=granularity, cap=cap, **options)
    state = {name: torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(-1)) for name, v in values.items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def evaluate_shape(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """f(x) for every channel: (len(x), channels), the same x fed to each channel."""
    channels = next((p.numel() for p in module.parameters()), 1)
    inputs = torch.as_tensor(x, dtype=torch.float32)[:, None].expand(-1, channels).contiguous()
    with torch.no_grad():
        return module(inputs).double().numpy()


def activation_shapes(report: dict, params: dict | None = None) -> Figure | None:
    candidates = []
    for site in sorted(report.get("sites") or [], key=lambda s: s.get("index", 0)):
        activation = site.get("replacement")
        if not site.get("replaced") or not activation or get_info(activation).kind != "elementwise":
            continue  # ConvReLU thresholds live inside a conv: see the threshold maps instead
        found = _site_values(report, site, params)
        if found is not None:
            candidates.append((site, *found))
    if not candidates:
        return None

    x = np.linspace(*X_RANGE, POINTS)
    data: dict = {}
    for site, values, source in _pick(candidates, MAX_SITES):
        curves = evaluate_shape(build_module(report, site, values), x)
        cap = 6.0 if site.get("kind") == "relu6" else None
        reference = evaluate_shape(create_activation("relu", 1, cap=cap), x)[:, 0]
        shown = sorted(set(np.linspace(0, curves.shape[1] - 1, MAX_CHANNELS).round().astype(int).tolist()))
        data[site["name"]] = {
            "activation": site["replacement"], "source": source, "x": x, "relu": reference,
            "reference": "ReLU" if cap is None else "ReLU6",
            "mean": curves.mean(axis=1), "channels": {c: curves[:, c] for c in shown} if curves.shape[1] > 1 else {},
            "parameters": {k: np.asarray(v) for k, v in values.items()},
        }

    # A second row shows f(x) - ReLU(x): after short fine-tuning the change is too small to see above.
    fig = new_figure(4.2 * len(data), 6.4)
    axes = fig.subplots(2, len(data), squeeze=False, sharex=True, height_ratios=(3, 2))
    for (ax, ax_diff), (name, entry) in zip(axes.T, data.items()):
        for c, curve in entry["channels"].items():
            ax.plot(x, curve, lw=0.8, alpha=0.7, label=f"channel {c}")
            ax_diff.plot(x, curve - entry["relu"], lw=0.8, alpha=0.7)
        mean_label = "mean over channels" if entry["channels"] else entry["activation"]
        ax.plot(x, entry["mean"], color=AFTER_COLOR, lw=2, label=mean_label)
        ax_diff.plot(x, entry["mean"] - entry["relu"], color=AFTER_COLOR, lw=2)
        # Drawn last so it stays visible where the learned curve still covers it.
        ax.plot(x, entry["relu"], ls="--", color="black", lw=1, label=entry["reference"])
        ax.set(title=f"{name} ({entry['activation']}, {entry['source']})", ylabel="f(x)")
        ax.title.set_fontsize(9)
        ax_diff.set(xlabel="x", ylabel=f"f(x) - {entry['reference']}(x)")
        ax_diff.axhline(0, color="black", lw=0.6)
        ax_diff.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for a in (ax, ax_diff):
            a.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return Figure("activation_shapes.png", "Learned activation shapes", render(fig), data)
