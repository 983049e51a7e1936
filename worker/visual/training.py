"""Training curves: loss per step and per epoch, learning rate, validation accuracy per epoch."""

from __future__ import annotations

from matplotlib.ticker import MaxNLocator

from .plotting import AFTER_COLOR, BEFORE_COLOR, Figure, as_float, new_figure, no_data, render


def epoch_end_steps(epochs: list[dict]) -> list[int]:
    """The global step each epoch ended on (epochs record how many steps they ran, so a max_steps
    cut or a resumed run still lines up with the step axis)."""
    out, total = [], 0
    for e in epochs:
        total += int(e.get("steps") or 0)
        out.append(total)
    return out


def training_curves(report: dict) -> Figure | None:
    training = report.get("training") or {}
    steps, epochs = training.get("steps") or [], training.get("epochs") or []
    if not steps and not epochs:
        return None
    data = {
        "step": [s.get("step") for s in steps],
        "step_loss": [as_float(s.get("loss")) for s in steps],
        "step_lr": [as_float(s.get("lr")) for s in steps],
        "epoch": [e.get("epoch") for e in epochs],
        "epoch_end_step": epoch_end_steps(epochs),
        "epoch_train_loss": [as_float(e.get("train_loss")) for e in epochs],
        "epoch_val_loss": [as_float(e.get("val_loss")) for e in epochs],
        "epoch_val_accuracy": [as_float(e.get("val_accuracy")) for e in epochs],
        "baseline_accuracy": (report.get("metrics") or {}).get("baseline_accuracy"),
        "at_init_accuracy": (report.get("metrics") or {}).get("converted_accuracy_at_init"),
    }
    fig = new_figure(15, 4.2)
    ax_loss, ax_lr, ax_acc = fig.subplots(1, 3)

    if steps:
        stride = training.get("step_stride") or 1
        label = "train loss per step" + (f" (every {stride}th)" if stride > 1 else "")
        ax_loss.plot(data["step"], data["step_loss"], color=AFTER_COLOR, lw=1, label=label)
    if epochs:
        ax_loss.plot(data["epoch_end_step"], data["epoch_train_loss"], "o-", color="#d62728", label="train loss per epoch")
        ax_loss.plot(data["epoch_end_step"], data["epoch_val_loss"], "s--", color="#2ca02c", label="val loss per epoch")
    ax_loss.set(title="Loss", xlabel="step", ylabel="cross-entropy")
    ax_loss.legend(fontsize=8)

    if steps:
        ax_lr.plot(data["step"], data["step_lr"], color=AFTER_COLOR)
        ax_lr.set(title="Learning rate", xlabel="step", ylabel="lr")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    else:
        no_data(ax_lr, "no steps logged")

    if epochs:
        ax_acc.plot(data["epoch"], data["epoch_val_accuracy"], "o-", color=AFTER_COLOR, label="after epoch")
        for value, label, color in ((data["baseline_accuracy"], "original", BEFORE_COLOR),
                                    (data["at_init_accuracy"], "converted at init", "#ff7f0e")):
            if value is not None:
                ax_acc.axhline(value, ls="--", color=color, label=label)
        ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
        ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
        epoch_numbers = [e for e in data["epoch"] if e is not None]
        if epoch_numbers:
            ax_acc.set_xlim(min(epoch_numbers) - 0.5, max(epoch_numbers) + 0.5)
        ax_acc.legend(fontsize=8)
    else:
        no_data(ax_acc, "no epoch finished")
    return Figure("training_curves.png", "Training curves", render(fig), data)
