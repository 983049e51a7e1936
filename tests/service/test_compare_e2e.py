"""Compare jobs end to end with real parts: a real redis-server, the API under uvicorn, TWO Celery
prefork workers (each one job at a time), SQLite, the reaper; the children fine-tune the digits
resnet18 (tests/conftest.py) on CPU, its weights uploaded once for the whole compare.

Every number of the leaderboard is recomputed here from the children's report.json, downloaded
through the API, with numpy and scipy directly (not with service.leaderboard).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import time

import httpx
import numpy as np
import pytest
from job_helpers import ARCH, IMAGE_SIZE
from scipy import stats

from reluswap.supervisor import start_embedded

pytestmark = pytest.mark.slow

HEARTBEAT_TIMEOUT_S = 10.0  # two workers share 2 cores here: a beat may come late under load
ENDED = ("succeeded", "failed", "cancelled")
ALPHA = 0.05
TOL = 1e-12
OTHER_KEY = secrets.token_urlsafe(24)
# pvlu replaces the first ReLU site; convrelu cannot (a maxpool, not a conv, follows it): its children fail.
GOOD, BAD, STRATEGY = "pvlu", "convrelu", "first:1"
SEEDS = 2


def compare_body(activations=(GOOD, BAD), strategies=(STRATEGY,), seeds=SEEDS, max_steps=2) -> dict:
    return {
        "model": {"arch": ARCH, "num_classes": 10, "weights": "upload"},
        "dataset": {"uri": "builtin:digits", "image_size": IMAGE_SIZE, "val_split": 0.1},
        "activations": list(activations),
        "strategies": list(strategies),
        "seeds": seeds,
        "test_split": 0.1,
        # lr 0.1: two steps move the predictions enough for McNemar to count discordant images (b, c > 0).
        "train": {"epochs": 1, "batch_size": 32, "max_steps": max_steps, "stats_batches": 1, "seed": 0, "lr": 0.1},
        "export": {"onnx": False, "pt2": False},
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    saved = os.environ.get("RELUSWAP_API_KEYS")
    os.environ["RELUSWAP_API_KEYS"] = f"other:{OTHER_KEY}"  # start_embedded appends its own key
    try:
        embedded = start_embedded(tmp_path_factory.mktemp("compare-service"), workers=2,
                                  heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    finally:
        if saved is None:
            os.environ.pop("RELUSWAP_API_KEYS", None)
        else:
            os.environ["RELUSWAP_API_KEYS"] = saved
    yield embedded
    embedded.stop(timeout=20)


def _client(service, key: str) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def client(service):
    with _client(service, service.api_key) as c:
        yield c


def submit(client, weights, body: dict) -> dict:
    with open(weights, "rb") as f:
        r = client.post("/compare", data={"config": json.dumps(body)},
                        files={"weights": ("weights.safetensors", f, "application/octet-stream")})
    assert r.status_code == 202, r.text
    return r.json()


def wait_compare(client, compare_id: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        compare = client.get(f"/compare/{compare_id}").json()
        if predicate(compare):
            return compare
        time.sleep(0.5)
    raise AssertionError(f"compare {compare_id} never reached the condition; last: {compare['status']} "
                         f"{[(c['id'], c['status']) for a in compare['arms'] for c in a['children']]}")


def children_of(client, compare_id: str) -> list[dict]:
    r = client.get("/jobs", params={"compare_id": compare_id, "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def artifact_json(client, path: str) -> dict:
    r = client.get(path)
    assert r.status_code == 200, (path, r.text)
    return json.loads(r.content)


@pytest.fixture(scope="module")
def finished(client, pretrained_digits):
    """The main compare, run once: 1 original + 3 arms (relu, pvlu, convrelu) x 2 seeds."""
    created = submit(client, pretrained_digits, compare_body())
    started = time.monotonic()
    done = wait_compare(client, created["id"], lambda c: c["status"] in ENDED, 900)
    kids = children_of(client, created["id"])
    reports = {k["id"]: artifact_json(client, f"/jobs/{k['id']}/artifacts/report.json")
               for k in kids if k["status"] == "succeeded"}
    board = artifact_json(client, f"/compare/{created['id']}/artifacts/leaderboard.json")
    return {"created": created, "compare": done, "children": kids, "reports": reports, "board": board,
            "seconds": time.monotonic() - started}


def _arm(compare_or_board: dict, name: str) -> dict:
    return next(a for a in compare_or_board["arms"] if a["name"] == name)


# ---- the compare runs: controls, a failed arm, artifacts, children, two workers ---------------------


def test_a_compare_with_a_failing_arm_succeeds(client, finished):
    compare, kids = finished["compare"], finished["children"]
    good, bad = f"{GOOD} | {STRATEGY}", f"{BAD} | {STRATEGY}"
    assert compare["status"] == "succeeded", compare["error"]
    names = {a["name"]: a for a in compare["arms"]}
    assert set(names) == {"original", "relu", good, bad}
    assert names["original"]["control"] and names["relu"]["control"]
    assert compare["progress"] == {"children": 1 + 3 * SEEDS, "ended": 1 + 3 * SEEDS, "fraction": 1.0}

    # The convrelu arm: every child failed, saying why; its verdict is failed. The rest succeeded.
    for child in names[bad]["children"]:
        assert child["status"] == "failed"
        assert "replaced none" in child["error"]["message"] and "convrelu" in child["error"]["message"]
    assert all(c["status"] == "succeeded" for n in ("original", "relu", good) for c in names[n]["children"])
    assert next(r for r in compare["leaderboard"] if r["arm"] == bad)["verdict"] == "failed"
    assert _arm(finished["board"], bad)["verdict"] == "failed"

    # Artifacts: the leaderboard files and the winner's model files.
    artifacts = {a["name"] for a in client.get(f"/compare/{compare['id']}/artifacts").json()["data"]}
    assert {"leaderboard.json", "leaderboard.csv", "leaderboard.png", "weights.safetensors",
            "conversion.json"} <= artifacts
    png = client.get(f"/compare/{compare['id']}/artifacts/leaderboard.png").content
    assert png.startswith(b"\x89PNG")
    winner_arm = _arm(finished["board"], compare["winner"]["arm"])
    best = max((s for s in winner_arm["seeds"] if s["status"] == "succeeded"), key=lambda s: s["final_accuracy"])
    theirs = client.get(f"/jobs/{best['child_id']}/artifacts/weights.safetensors").content
    assert client.get(f"/compare/{compare['id']}/artifacts/weights.safetensors").content == theirs

    # Every child is listed under the compare, and only those.
    in_arms = {c["id"] for a in compare["arms"] for c in a["children"]}
    assert {k["id"] for k in kids} == in_arms and len(kids) == 1 + 3 * SEEDS
    assert all(k["compare_id"] == compare["id"] for k in kids)

    # Both workers ran children: each start event names the Celery worker (node) that claimed it.
    nodes = set()
    for k in kids:
        events = client.get(f"/jobs/{k['id']}/events", params={"limit": 100}).json()["data"]
        starts = [e for e in events if e["type"] == "status" and "attempt" in (e.get("data") or {})]
        assert len(starts) == 1, (k["id"], starts)
        nodes.add(starts[0]["data"]["worker"].rsplit(":", 2)[0])
    assert len(nodes) >= 2, nodes


# ---- every number of leaderboard.json, recomputed from the reports -------------------------------


def _close(actual, expected, what: str) -> None:
    if expected is None:
        assert actual is None, (what, actual)
    elif isinstance(expected, list):
        assert actual is not None and len(actual) == len(expected), (what, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _close(a, e, f"{what}[{i}]")
    else:
        assert actual == pytest.approx(expected, abs=TOL, rel=0), (what, actual, expected)


def _summary(values: list[float]) -> dict:
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = float(np.mean(values))
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci": None}
    std = float(np.std(values, ddof=1))
    ci = [mean, mean] if std == 0 else [float(x) for x in stats.t.interval(0.95, n - 1, loc=mean,
                                                                           scale=std / math.sqrt(n))]
    return {"n": n, "mean": mean, "std": std, "ci": ci}


def _check_summary(actual: dict | None, values: list[float], what: str) -> None:
    expected = _summary(values)
    assert actual is not None and actual["n"] == expected["n"], (what, actual, expected)
    for key in ("mean", "std", "ci"):
        _close(actual[key], expected[key], f"{what}.{key}")


def _bits(report: dict) -> np.ndarray:
    return np.array([b == "1" for b in report["predictions"]["val_correct"]], dtype=bool)


def _holm(ps: list[float]) -> list[float]:
    m, out, running = len(ps), [0.0] * len(ps), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: ps[k])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def test_every_leaderboard_number_is_recomputed_from_the_reports(client, finished):
    board, reports, compare = finished["board"], finished["reports"], finished["compare"]
    kids = {k["id"]: k for k in finished["children"]}
    original = next(k for k in kids.values() if k["arm"] == "original")
    base = reports[original["id"]]["baseline"]
    acc0, n_val = base["accuracy"], len(reports[original["id"]]["predictions"]["val_correct"])
    assert board["alpha"] == ALPHA and board["control"] == "relu"
    _close(board["original"]["accuracy"], acc0, "original.accuracy")
    _close(board["original"]["test_accuracy"], base["test_accuracy"], "original.test_accuracy")
    assert board["original"]["n_images"] == n_val

    # Every training child is in exactly one arm's seeds, with its own seed, status and numbers.
    seen = {s["child_id"] for a in board["arms"] for s in a["seeds"]}
    assert seen == {k for k, c in kids.items() if c["arm"] != "original"}

    def runs(arm: dict) -> dict[int, dict]:
        """seed -> report of the arm's succeeded children."""
        return {s["seed"]: reports[s["child_id"]] for s in arm["seeds"] if s["status"] == "succeeded"}

    control = _arm(board, "relu")
    ctrl = runs(control)
    assert control["control"] and control["verdict"] == "control" and control["vs_control"] is None
    assert control["mcnemar"] is None and len(ctrl) == SEEDS

    def rel(acc: float) -> float:
        return ((1 - acc0) - (1 - acc)) / (1 - acc0)

    tested = []  # (arm entry, raw p)
    for arm in board["arms"]:
        ok = runs(arm)
        children = [kids[s["child_id"]] for s in arm["seeds"]]
        assert {c["arm"] for c in children} == {arm["name"]}
        assert arm["n_seeds"] == len(arm["seeds"]) == SEEDS and arm["n_succeeded"] == len(ok)
        first = children[0]["config"]
        assert arm["config"] == {"activation": first["activation"], "strategy": first["strategy"],
                                 "trainable": first["train"]["trainable"], "init": first["activation_options"]["init"]}
        for s in arm["seeds"]:
            child = kids[s["child_id"]]
            assert s["seed"] == child["config"]["train"]["seed"] and s["status"] == child["status"]
            if s["status"] != "succeeded":
                assert s["final_accuracy"] is None and s["error"] == child["error"]
                continue
            r = ok[s["seed"]]
            assert s["final_accuracy"] == r["metrics"]["final_accuracy"]
            assert s["test_accuracy"] == r["final"]["test_accuracy"]
            assert (s["peak_epoch"], s["peak_val_accuracy"], s["peak_test_accuracy"]) == (
                r["peak"]["epoch"], r["peak"]["val_accuracy"], r["peak"]["test_accuracy"])
            assert s["n_images"] == len(r["predictions"]["val_correct"]) == n_val
            _close(s["relative_error_decrease"], rel(r["metrics"]["final_accuracy"]), f"{arm['name']} rel")
            if arm["control"]:
                assert s["diff_to_control"] is None and s["mcnemar_b"] is None
                continue
            partner = ctrl[s["seed"]]
            _close(s["diff_to_control"], r["metrics"]["final_accuracy"] - partner["metrics"]["final_accuracy"],
                   f"{arm['name']} seed {s['seed']} diff")
            mine, theirs = _bits(r), _bits(partner)
            assert (s["mcnemar_b"], s["mcnemar_c"]) == (int(np.sum(mine & ~theirs)), int(np.sum(~mine & theirs)))

        finals = [ok[k]["metrics"]["final_accuracy"] for k in sorted(ok)]
        _check_summary(arm["final_accuracy"], finals, f"{arm['name']} final_accuracy")
        _check_summary(arm["test_accuracy"], [ok[k]["final"]["test_accuracy"] for k in sorted(ok)],
                       f"{arm['name']} test_accuracy")
        _check_summary(arm["peak_test_accuracy"], [ok[k]["peak"]["test_accuracy"] for k in sorted(ok)],
                       f"{arm['name']} peak_test_accuracy")
        _check_summary(arm["relative_error_decrease"], [rel(a) for a in finals], f"{arm['name']} rel")
        if arm["control"]:
            continue
        if not ok:
            assert arm["verdict"] == "failed" and arm["vs_control"] is None and arm["mcnemar"] is None
            continue

        # Paired by seed against the control: differences, their summary, the paired t-test.
        paired = sorted(k for k in ok if k in ctrl)
        a = [ok[k]["metrics"]["final_accuracy"] for k in paired]
        c = [ctrl[k]["metrics"]["final_accuracy"] for k in paired]
        diffs = [x - y for x, y in zip(a, c, strict=True)]
        vs = arm["vs_control"]
        assert vs["seeds"] == paired
        _close(vs["differences"], diffs, f"{arm['name']} differences")
        _check_summary(vs, diffs, f"{arm['name']} vs_control")
        if all(d == 0 for d in diffs):
            assert (vs["t"], vs["p"]) == (0.0, 1.0)
        else:
            res = stats.ttest_rel(a, c)
            for key, value in (("t", res.statistic), ("p", res.pvalue)):
                _close(vs[key], float(value) if math.isfinite(value) else None, f"{arm['name']} vs_control.{key}")

        # Exact McNemar, b and c summed over the paired seeds.
        per_seed = [(int(np.sum(_bits(ok[k]) & ~_bits(ctrl[k]))), int(np.sum(~_bits(ok[k]) & _bits(ctrl[k]))))
                    for k in paired]
        b, cc = sum(x for x, _ in per_seed), sum(y for _, y in per_seed)
        p = 1.0 if b + cc == 0 else float(stats.binomtest(b, b + cc, 0.5).pvalue)
        m = arm["mcnemar"]
        assert m["seeds"] == paired and (m["b"], m["c"]) == (b, cc)
        _close(m["p"], p, f"{arm['name']} mcnemar.p")
        tested.append((arm, p))

    # Holm over the non-control arms that were tested, then the verdicts at alpha.
    assert tested, "no arm was tested against the control"
    for (arm, _), p_holm in zip(tested, _holm([p for _, p in tested]), strict=True):
        _close(arm["mcnemar"]["p_holm"], p_holm, f"{arm['name']} p_holm")
        m = arm["mcnemar"]
        expected = ("better" if m["b"] > m["c"] else "worse") if p_holm < ALPHA and m["b"] != m["c"] \
            else "no_difference"
        assert arm["verdict"] == expected, (arm["name"], m, p_holm)

    # Ranks: by mean final accuracy, failed arms last; the original placed above the first arm it beats.
    means = [a["final_accuracy"]["mean"] for a in board["arms"]]
    assert [a["rank"] for a in board["arms"]] == list(range(1, len(means) + 1))
    scored = [x for x in means if x is not None]
    assert scored == sorted(scored, reverse=True) and means[len(scored):] == [None] * (len(means) - len(scored))
    rows = [r for r in board["ranking"] if r["kind"] != "original"]
    assert [(r["rank"], r["arm"], r["verdict"]) for r in rows] == [
        (a["rank"], a["name"], a["verdict"]) for a in board["arms"]]
    where = next(i for i, r in enumerate(board["ranking"]) if r["kind"] == "original")
    expected_where = next((i for i, x in enumerate(means) if x is None or x < acc0), len(means))
    assert where == expected_where and board["ranking"][where]["mean_final_accuracy"] == acc0

    # The winner: the best-ranked arm judged better than the control, else the control itself.
    better = [a for a in board["arms"] if a["verdict"] == "better"]
    expected = better[0] if better else control
    assert board["winner"]["arm"] == expected["name"] and board["winner"]["control"] is (not better)
    _close(board["winner"]["mean_final_accuracy"], expected["final_accuracy"]["mean"], "winner mean")
    assert compare["winner"] == board["winner"]
    assert [(r["arm"], r["verdict"], r["rank"]) for r in compare["leaderboard"]] == [
        (a["name"], a["verdict"], a["rank"]) for a in board["arms"]]

    # leaderboard.csv: one row per arm x seed, the same numbers.
    text = client.get(f"/compare/{compare['id']}/artifacts/leaderboard.csv").text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == sum(len(a["seeds"]) for a in board["arms"])
    for row in table:
        seed = next(s for s in _arm(board, row["arm"])["seeds"] if s["child_id"] == row["child_id"])
        for key in ("final_accuracy", "relative_error_decrease", "diff_to_control"):
            _close(float(row[key]) if row[key] else None, seed[key], f"csv {row['arm']} {key}")


# ---- cancel, another owner, a grid too large ----------------------------------------------------


def test_cancelling_a_running_compare_cancels_every_child(client, pretrained_digits, finished):
    created = submit(client, pretrained_digits, compare_body(activations=[GOOD], strategies=["all"], seeds=2,
                                                             max_steps=200))
    cid = created["id"]

    def underway(compare: dict) -> bool:
        kids = children_of(client, cid)
        return any(k["status"] == "running" for k in kids)

    wait_compare(client, cid, underway, 300)
    r = client.post(f"/compare/{cid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("cancelling", "cancelled")
    done = wait_compare(client, cid, lambda c: c["status"] in ENDED, 180)
    assert done["status"] == "cancelled"
    kids = children_of(client, cid)
    assert len(kids) == 1 + 2 * 2 and all(k["status"] in ENDED for k in kids)
    # Whatever had not ended by the cancel was cancelled (nothing was left to run to the end).
    assert sum(k["status"] == "cancelled" for k in kids) >= 4, [(k["arm"], k["status"]) for k in kids]
    assert not any(k["status"] == "succeeded" and k["arm"] != "original" for k in kids)
    assert client.post(f"/compare/{cid}/cancel").status_code == 409


def test_another_owner_gets_404(service, finished):
    cid = finished["compare"]["id"]
    with _client(service, OTHER_KEY) as other:
        for path in (f"/compare/{cid}", f"/compare/{cid}/artifacts/leaderboard.json", f"/compare/{cid}/artifacts"):
            r = other.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "compare_not_found"
        assert other.get("/compare").json()["data"] == []
        assert other.get("/jobs", params={"compare_id": cid}).json()["data"] == []


def test_a_grid_too_large_is_refused_naming_the_count(client, pretrained_digits):
    body = compare_body(activations=["pvlu", "frelu", "prelu", "dprelu", "dualline", "adarelu", "convrelu"],
                        strategies=["all", "block:first", "block:last"], seeds=3)
    with open(pretrained_digits, "rb") as f:
        r = client.post("/compare", data={"config": json.dumps(body)},
                        files={"weights": ("weights.safetensors", f, "application/octet-stream")})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "too_many_children" and "67 child jobs" in error["message"]
    assert "at most 64" in error["message"]
