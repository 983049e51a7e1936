"""Moving a compare job forward: dispatch its training children once the original is measured,
and write its leaderboard once every child has ended.

advance() is idempotent and safe to call from anywhere at any time: a worker calls it after each
child it ran ended, and the reaper calls it for every compare that has not ended, so a worker that
dies between a child's end and the leaderboard leaves nothing stuck. Exactly one caller dispatches
(an atomic flag) and exactly one records the end (a conditional update); the leaderboard files are
written atomically, so two callers racing to finish write the same bytes.

Torch-free: the reaper runs it in the API process.
"""

from __future__ import annotations

import logging

from .compare_results import copy_winner_files, leaderboard_from_reports, reports_under, winner_child
from .compare_store import CompareStore
from .contract import ENDED_STATUSES
from .leaderboard import ControlFailed, write_leaderboard
from .queue import JobQueue
from .storage import LocalStorage

log = logging.getLogger(__name__)


def advance(compares: CompareStore, storage: LocalStorage, queue: JobQueue, compare_id: str,
            alpha: float = 0.05) -> str | None:
    """Do what is due for this compare; its status afterwards (None when it does not exist)."""
    compare, children = compares.state(compare_id)
    if compare is None or compare["status"] in ENDED_STATUSES:
        return None if compare is None else compare["status"]
    original = next(c for c in children if c["child_kind"] == "original")
    training = [c for c in children if c["child_kind"] == "train"]
    waiting = [c for c in training if c["status"] == "queued"]
    if compare["status"] == "cancelling" and waiting:
        owner = compares.owner_of(compare_id)
        for child in waiting:  # a cancel that was interrupted half-way: finish its work
            compares.jobs.request_cancel(child["id"], owner)
        children = compares.children(compare_id)
    elif original["status"] == "succeeded":
        if compares.claim_dispatch(compare_id):  # conditional: true once, for one caller
            try:
                for child in waiting:
                    queue.send(child["id"])
            except Exception:
                # The broker is down: release the flag so the next advance() (the reaper's) sends
                # them; a child sent twice runs once, since the worker's claim decides.
                compares.release_dispatch(compare_id)
                raise
    elif original["status"] in ENDED_STATUSES and waiting:
        # Without the original's measurements no child can run: end the ones still waiting.
        for child in waiting:
            compares.jobs.fail(child["id"], {"code": "original_failed", "param": None,
                                             "message": "the original model could not be measured"})
        children = compares.children(compare_id)
    if all(c["status"] in ENDED_STATUSES for c in children) and compares.claim_finish(compare_id):
        # One process writes the leaderboard (a claim that goes stale if that process dies).
        try:
            return finish(compares, storage, compare, children, alpha)
        except Exception as err:  # unreadable reports, a full disk: end it, do not retry forever
            log.exception("compare %s: the leaderboard could not be written", compare_id)
            compares.finish(compare_id, "failed", error={"code": "internal_error", "param": None,
                                                         "message": f"{type(err).__name__}: {err}"})
            return "failed"
    return compares.state(compare_id)[0]["status"]


def finish(compares: CompareStore, storage: LocalStorage, compare: dict, children: list[dict],
           alpha: float) -> str:
    compare_id = compare["id"]
    original = next(c for c in children if c["child_kind"] == "original")
    if compare["status"] == "cancelling":
        compares.finish(compare_id, "cancelled")
        return "cancelled"
    if original["status"] != "succeeded":
        why = (original.get("error") or {}).get("message", original["status"])
        error = {"code": "control_failed", "param": None,
                 "message": f"the original model could not be measured ({why}); nothing can be compared"}
        compares.finish(compare_id, "failed", error=error)
        return "failed"
    try:
        leaderboard = leaderboard_from_reports(children, reports_under(storage.artifacts_dir), alpha)
    except ControlFailed as err:
        compares.finish(compare_id, "failed", error={"code": "control_failed", "message": str(err), "param": None})
        return "failed"
    leaderboard["compare_id"] = compare_id
    out = storage.artifacts_dir(compare_id)
    write_leaderboard(leaderboard, out)
    source = winner_child(leaderboard)
    if source:
        copy_winner_files(storage.artifacts_dir(source), out)
    summary = [{"rank": a["rank"], "arm": a["name"], "control": a["control"], "verdict": a["verdict"],
                "final_accuracy": a["final_accuracy"]["mean"] if a["final_accuracy"] else None}
               for a in leaderboard["arms"]]
    result = {"winner": leaderboard["winner"], "leaderboard": summary}
    compares.finish(compare_id, "succeeded", result=result, artifacts=storage.list_artifacts(compare_id))
    return "succeeded"
