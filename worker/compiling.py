"""torch.compile of the training step, with an eager fallback (train.compile: auto | on | off, or a bool).

"auto" compiles on CUDA and runs eager on CPU (compiling costs tens of seconds per model on CPU for
little gain, and eager is easier to debug). The original module stays the one checkpointed and
exported (no `_orig_mod.` prefix in state_dict keys) and the one evaluate() runs. If compiling
fails, "auto" warns and goes on eagerly; "on" fails the job naming train.compile.
"""

from __future__ import annotations

import torch
from torch import nn

from converters.vocabulary import check_choice
from service.contract import SWITCH_SETTINGS

from .errors import CompileFailed
from .progress import Reporter


def resolve_compile(setting, device: torch.device) -> bool:
    """train.compile -> whether to compile: on/True and off/False as said; auto: on CUDA only."""
    if setting in ("on", True):
        return True
    if setting in ("off", False):
        return False
    if setting == "auto":
        return device.type == "cuda"
    check_choice("train.compile", setting, SWITCH_SETTINGS)
    raise AssertionError("unreachable")


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a failed compilation raises: dynamo's own errors (which wrap the backend's, e.g.
    InductorError), and inductor's compiler errors, which a lazily compiled backward raises bare."""
    import torch._dynamo.exc as dynamo_exc

    errors: list[type[BaseException]] = [dynamo_exc.TorchDynamoException]
    try:
        import torch._inductor.exc as inductor_exc

        errors += [inductor_exc.CppCompileError, inductor_exc.InvalidCxxCompiler, inductor_exc.OperatorIssue]
    except ImportError:  # pragma: no cover - a torch without inductor
        pass
    return tuple(errors)


class StepModel:
    """The module the training step calls: `model` itself, or torch.compile(model) when `enabled`.

    The compiled wrapper shares model's parameters and buffers; only `model` is ever checkpointed
    or exported. Compilation is lazy (the first forward, and the first backward, compile), so a
    failure shows in a step: `failed(err)` then switches to eager (with a warning, when not
    `required`) or raises CompileFailed naming train.compile (when `required`: compile "on").
    `info` is what the report records: {setting, enabled, used, fallback}.
    """

    def __init__(self, model: nn.Module, enabled: bool, required: bool = False, reporter: Reporter | None = None,
                 setting: str | bool | None = None):
        self.model, self.required, self.reporter = model, required, reporter
        self.info = {"setting": setting if setting is not None else ("on" if enabled else "off"),
                     "enabled": enabled, "used": False, "fallback": None}
        self._compiled: nn.Module | None = None
        self.proven = False  # a compiled step (forward and backward) has run
        if enabled:
            try:
                self._compiled = torch.compile(model)
            except Exception as err:  # e.g. a Python version dynamo does not support
                self.failed(err)
            else:
                self.info["used"] = True

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def module(self) -> nn.Module:
        return self._compiled if self._compiled is not None else self.model

    def is_compile_error(self, err: BaseException) -> bool:
        return self.compiled and isinstance(err, _compile_errors())

    def failed(self, err: BaseException) -> None:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
        why = f"{type(err).__name__}: {first_line}"
        if self.required:
            raise CompileFailed(f"torch.compile of the training step failed ({why}); set train.compile to "
                                "'auto' or 'off' to train without compiling", "train.compile") from err
        self._compiled = None
        self.info.update(used=False, fallback=why)
        if self.reporter is not None:
            self.reporter.log(f"torch.compile of the training step failed, training eagerly instead ({why})",
                              "warning")
