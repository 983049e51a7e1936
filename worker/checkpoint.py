"""Training checkpoints: model, optimizer, scheduler, AMP scaler, RNG states, epoch and history.

Written atomically (a temporary file, then os.replace) after every epoch, so a job killed at any
moment leaves either the previous checkpoint or the new one, never half of one. Read back with
torch.load(weights_only=True): the file holds tensors, numbers, strings, lists and dicts only.
A checkpoint records the config it belongs to; one from another config is not resumed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
FILENAME = "last.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy, torch CPU (and CUDA, when initialised) generator states, weights_only-safe."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_fingerprint(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    with open(tmp, "rb") as f:  # the data reaches the disk before the rename makes it current
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, fingerprint: str | None = None) -> tuple[dict | None, str | None]:
    """(state, None) when resumable; (None, reason) when missing, unreadable or from another config."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file: start over rather than fail the job
        return None, f"checkpoint {path.name} is unreadable ({type(err).__name__}); starting over"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None, f"checkpoint {path.name} has an unknown format; starting over"
    if fingerprint is not None and state.get("config") != fingerprint:
        return None, f"checkpoint {path.name} belongs to another config; starting over"
    return state, None
