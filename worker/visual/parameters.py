"""The learned parameters: a histogram per parameter name across sites, and ConvReLU's threshold maps."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize

from converters.catalog import UnknownActivationError, get_info

from .plotting import AFTER_COLOR, Figure, finite, new_figure, no_data, per_item_height, render

MAX_THRESHOLD_MAPS = 4
HISTOGRAM_COLUMNS = 3


def parameter_owners(report: dict, params: dict) -> list[tuple[str, dict]]:
    """(parameter key, its site) in execution order for every key of params a site lists."""
    out = []
    for site in sorted(report.get("sites") or [], key=lambda s: s.get("index", 0)):
        out += [(key, site) for key in site.get("parameters") or [] if key in params]
    return out


def init_value(report: dict, activation: str | None, pname: str) -> float | None:
    """The catalogue's starting value of a parameter under this job's init (identity or paper)."""
    init = ((report.get("config") or {}).get("activation_options") or {}).get("init") or "identity"
    try:
        return get_info(activation).init_values(init).get(pname) if activation else None
    except (UnknownActivationError, ValueError):
        return None


def parameter_histograms(report: dict, params: dict | None) -> Figure | None:
    if not params:
        return None
    groups: dict[str, dict] = {}
    for key, site in parameter_owners(report, params):
        pname = key.rsplit(".", 1)[-1]
        group = groups.setdefault(pname, {"keys": [], "arrays": [], "activations": set(), "sites": set()})
        group["keys"].append(key)
        group["sites"].add(site.get("name"))
        group["arrays"].append(np.asarray(params[key], dtype=np.float64).ravel())
        group["activations"].add(site.get("replacement"))
    if not groups:
        return None
    data = {}
    for pname, group in groups.items():
        inits = {init_value(report, act, pname) for act in group["activations"]} - {None}
        data[pname] = {"keys": group["keys"], "sites": len(group["sites"]), "values": np.concatenate(group["arrays"]),
                       "init": inits.pop() if len(inits) == 1 else None}

    cols = min(HISTOGRAM_COLUMNS, len(data))
    rows = math.ceil(len(data) / cols)
    fig = new_figure(5 * cols, 3.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax, (pname, entry) in zip(axes, data.items()):
        values = finite(entry["values"])
        if values.size:
            ax.hist(values, bins=50, color=AFTER_COLOR)
            ax.set_yscale("log")  # a few moved values next to many that stayed near init
        else:
            no_data(ax, "no finite values")
        if entry["init"] is not None:
            ax.axvline(entry["init"], color="#d62728", ls="--", lw=1, label=f"init {entry['init']:g}")
            ax.legend(fontsize=8)
        ax.set(title=f"{pname}: {entry['values'].size} values from {entry['sites']} site(s)", xlabel=pname, ylabel="count")
    for ax in axes[len(data):]:
        ax.set_visible(False)
    return Figure("parameter_histograms.png", "Learned parameters", render(fig), data)


def convrelu_thresholds(report: dict, params: dict | None) -> Figure | None:
    """theta (C_in, kH, kW) as channels x kernel positions, for the first few ConvReLU convs."""
    if not params:
        return None
    maps = {}
    for key, site in parameter_owners(report, params):
        theta = np.asarray(params[key], dtype=np.float64)
        if site.get("replacement") == "convrelu" and theta.ndim == 3 and len(maps) < MAX_THRESHOLD_MAPS:
            maps[key] = {"site": site.get("name"), "theta": theta,
                         "matrix": theta.reshape(theta.shape[0], -1)}
    if not maps:
        return None
    channels = max(m["matrix"].shape[0] for m in maps.values())
    positions = max(m["matrix"].shape[1] for m in maps.values())
    fig = new_figure(len(maps) * (2.6 + 0.35 * positions), per_item_height(channels, 0.03, base=2.0, minimum=4.5))
    axes = np.atleast_1d(fig.subplots(1, len(maps), squeeze=False).ravel())
    for ax, (key, entry) in zip(axes, maps.items()):
        matrix = entry["matrix"]
        bound = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 0.0
        bound = bound or 1e-12  # all zeros (identity init): an even, valid colour scale
        image = ax.imshow(matrix, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                          norm=Normalize(-bound, bound))
        kh, kw = entry["theta"].shape[1:]
        ax.set_xticks(range(kh * kw), [f"{ky},{kx}" for ky in range(kh) for kx in range(kw)],
                      fontsize=7, rotation=90)
        ax.set(title=f"{entry['site']}\n{key}", xlabel="kernel position (ky,kx)", ylabel="input channel")
        ax.title.set_fontsize(8)
        fig.colorbar(image, ax=ax, label="theta")
    return Figure("convrelu_thresholds.png", "ConvReLU thresholds", render(fig), maps)
