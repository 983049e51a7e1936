"""metrics.csv: the logged training steps and the finished epochs, one row each."""

from __future__ import annotations

import csv
import io

COLUMNS = ("kind", "epoch", "step", "loss", "lr", "val_accuracy", "images_per_s")


def metrics_rows(report: dict) -> list[dict]:
    """Step rows of each epoch followed by that epoch's row, in training order. An epoch row's step
    is the global step the epoch ended on, so both kinds share the step axis."""
    training = report.get("training") or {}
    steps, epochs = training.get("steps") or [], training.get("epochs") or []
    rows = [{"kind": "step", "epoch": s.get("epoch"), "step": s.get("step"), "loss": s.get("loss"),
             "lr": s.get("lr")} for s in steps]
    end = 0
    for e in epochs:
        end += int(e.get("steps") or 0)
        rows.append({"kind": "epoch", "epoch": e.get("epoch"), "step": end, "loss": e.get("train_loss"),
                     "lr": e.get("lr"), "val_accuracy": e.get("val_accuracy"),
                     "images_per_s": e.get("images_per_s")})
    # Stable: within an epoch, its steps come before its own row.
    rows.sort(key=lambda r: (_key(r["epoch"]), r["kind"] == "epoch"))
    return rows


def _key(epoch) -> float:
    return float("inf") if epoch is None else float(epoch)


def metrics_csv(report: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in metrics_rows(report):
        # None means "not measured": an empty cell, like the columns that do not apply.
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()
