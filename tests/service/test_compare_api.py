"""Compare jobs through the API on a SQLite file with an in-memory queue: the children it creates,
what it dispatches and when, owner isolation, cancel, and the leaderboard written once when the
last child ends (by advance() or by the reaper, idempotently). Children's reports are written by
hand here, with constructed numbers; tests/service/test_compare_e2e.py runs real workers."""

from __future__ import annotations

import json

import pytest
from scipy.stats import binomtest
from service_helpers import ALICE, BOB

from service.compare_store import CompareStore
from service.compares import advance
from service.reaper import sweep

N_VAL = 40


def compare_body(**overrides) -> dict:
    body = {
        "model": {"arch": "torchvision:resnet18", "num_classes": 10},
        "dataset": {"uri": "builtin:digits", "image_size": 32},
        "activations": ["pvlu", "frelu"],
        "strategies": ["all"],
        "seeds": 2,
        "train": {"epochs": 1},
    }
    body.update(overrides)
    return body


def create(api, key=ALICE, **overrides) -> dict:
    r = api.client.post("/compare", json=compare_body(**overrides), headers=api.headers(key))
    assert r.status_code == 202, r.text
    assert r.headers["Location"].endswith(f"/compare/{r.json()['id']}")
    return r.json()


def children(api, compare_id: str) -> list[dict]:
    return CompareStore(api.store).children(compare_id)


def write_report(api, job: dict, accuracy: float, correct: list[bool], original: bool = False) -> None:
    bits = "".join("1" if c else "0" for c in correct)
    if original:
        report = {"baseline": {"accuracy": accuracy, "loss": 1.0, "samples": N_VAL, "test_accuracy": accuracy},
                  "predictions": {"val_correct": bits}}
    else:
        report = {"metrics": {"final_accuracy": accuracy}, "final": {"accuracy": accuracy, "test_accuracy": accuracy},
                  "peak": {"epoch": 1, "val_accuracy": accuracy, "test_accuracy": accuracy},
                  "predictions": {"val_correct": bits}}
    (api.storage.artifacts_dir(job["id"]) / "report.json").write_text(json.dumps(report))


def finish(api, job: dict, status: str = "succeeded", error: dict | None = None) -> None:
    assert api.store.claim(job["id"], "w", 60) is not None
    assert api.store.finish(job["id"], "w", status, error=error)


def test_a_compare_fans_out_into_children_and_dispatches_the_original_first(api):
    compare = create(api)
    arms = [a["name"] for a in compare["arms"]]
    assert arms == ["original", "relu", "pvlu | all", "frelu | all"]  # the plan's order, controls first
    assert {a["name"]: a["control"] for a in compare["arms"]} == {
        "original": True, "relu": True, "pvlu | all": False, "frelu | all": False}
    kids = children(api, compare["id"])
    assert len(kids) == 1 + 2 * 3 and compare["progress"] == {"children": 7, "ended": 0, "fraction": 0.0}
    original = next(c for c in kids if c["child_kind"] == "original")
    assert api.queue.sent == [original["id"]]  # the rest wait for the original's measurement
    # Seeds are the only difference between the children of an arm; the test split is held alike.
    pvlu = [c for c in kids if c["arm"] == "pvlu | all"]
    assert sorted(c["config"]["train"]["seed"] for c in pvlu) == [0, 1]
    assert {json.dumps({**c["config"], "train": {**c["config"]["train"], "seed": 0}}, sort_keys=True)
            for c in pvlu} == {json.dumps({**pvlu[0]["config"], "train": {**pvlu[0]["config"]["train"], "seed": 0}},
                                          sort_keys=True)}
    assert all(c["config"]["dataset"]["test_split"] == 0.2 for c in kids)
    relu = [c for c in kids if c["arm"] == "relu"]
    assert all(c["config"]["activation"] == "relu" and c["config"]["strategy"] == "all" for c in relu)
    listed = api.client.get(f"/jobs?compare_id={compare['id']}", headers=api.headers()).json()["data"]
    assert {j["id"] for j in listed} == {c["id"] for c in kids}
    assert all(j["compare_id"] == compare["id"] for j in listed)


def test_a_grid_over_max_children_is_refused_naming_the_count(api):
    body = compare_body(activations=["pvlu", "frelu", "prelu", "dprelu", "dualline", "adarelu", "convrelu"],
                        strategies=["all", "block:first", "block:last"], seeds=3)
    r = api.client.post("/compare", json=body, headers=api.headers())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    # 1 original + 3 seeds x (1 control + 7 x 3 arms)
    assert error["code"] == "too_many_children" and "67 child jobs" in error["message"] and "64" in error["message"]
    assert error["param"] == "seeds" and "3 seeds x 22 arms" in error["message"]
    assert children_count(api) == 0


def test_the_refusal_counts_the_arms_right_with_one_seed(api):
    body = compare_body(activations=["pvlu", "frelu", "prelu", "dprelu", "dualline", "adarelu", "convrelu"],
                        strategies=[f"first:{n}" for n in range(1, 11)], seeds=1)
    r = api.client.post("/compare", json=body, headers=api.headers())
    assert r.status_code == 422, r.text
    # 1 original + 1 seed x (1 control + 7 x 10 arms): the original is not an arm
    assert "72 child jobs (1 original + 1 seeds x 71 arms" in r.json()["error"]["message"]


def children_count(api) -> int:
    return len(api.client.get("/jobs", headers=api.headers()).json()["data"])


@pytest.mark.parametrize("body,param", [
    (compare_body(activations=["swish"]), "activations"),
    (compare_body(activations=["relu"]), None),
    (compare_body(strategies=["first"]), "strategies"),
    (compare_body(seeds=0), "seeds"),
])
def test_bad_compare_bodies_name_the_field(api, body, param):
    r = api.client.post("/compare", json=body, headers=api.headers())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_config"
    if param:
        assert r.json()["error"]["param"] == param
    assert children_count(api) == 0


def test_another_owner_sees_nothing(api):
    compare = create(api)
    cid = compare["id"]
    for method, path in [("get", f"/compare/{cid}"), ("post", f"/compare/{cid}/cancel"),
                         ("delete", f"/compare/{cid}"), ("get", f"/compare/{cid}/artifacts"),
                         ("get", f"/compare/{cid}/artifacts/leaderboard.json")]:
        r = getattr(api.client, method)(path, headers=api.headers(BOB))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "compare_not_found"
    assert api.client.get("/compare", headers=api.headers(BOB)).json()["data"] == []
    assert api.client.get(f"/jobs?compare_id={cid}", headers=api.headers(BOB)).json()["data"] == []
    assert api.client.get(f"/compare/{cid}", headers=api.headers()).status_code == 200


def _run_all(api, compare_id: str, correct_by_arm: dict[str, list[list[bool]]]) -> None:
    kids = children(api, compare_id)
    original = next(c for c in kids if c["child_kind"] == "original")
    write_report(api, original, 0.5, [i % 2 == 0 for i in range(N_VAL)], original=True)
    finish(api, original)
    compares = CompareStore(api.store)
    advance(compares, api.storage, api.queue, compare_id)
    training = [c for c in kids if c["child_kind"] == "train"]
    assert sorted(api.queue.sent[1:]) == sorted(c["id"] for c in training)
    advance(compares, api.storage, api.queue, compare_id)  # dispatch happens once
    assert len(api.queue.sent) == 1 + len(training)
    for child in training:
        correct = correct_by_arm[child["arm"]][child["seed_index"]]
        write_report(api, child, sum(correct) / N_VAL, correct)
        finish(api, child)


def test_the_leaderboard_is_written_once_when_every_child_ended(api):
    compare = create(api)
    control = [[i < 20 for i in range(N_VAL)], [i < 21 for i in range(N_VAL)]]
    better = [[i < 38 for i in range(N_VAL)], [i < 39 for i in range(N_VAL)]]  # right wherever relu is, and more
    same = control
    _run_all(api, compare["id"], {"relu": control, "pvlu | all": better, "frelu | all": same})
    # No advance() after the last child: a worker died there. The reaper finishes the compare.
    assert api.client.get(f"/compare/{compare['id']}", headers=api.headers()).json()["status"] == "running"
    actions = sweep(api.store, api.queue, api.settings, api.storage)
    assert (compare["id"], "succeeded") in actions
    done = api.client.get(f"/compare/{compare['id']}", headers=api.headers()).json()
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0
    assert done["winner"]["arm"] == "pvlu | all"
    names = {a["name"] for a in api.client.get(f"/compare/{compare['id']}/artifacts", headers=api.headers()).json()["data"]}
    assert {"leaderboard.json", "leaderboard.csv", "leaderboard.png"} <= names
    board = json.loads(api.client.get(f"/compare/{compare['id']}/artifacts/leaderboard.json", headers=api.headers()).content)
    pvlu = next(a for a in board["arms"] if a["name"] == "pvlu | all")
    # McNemar against the control, discordant counts summed over seeds: 18 + 18 images only pvlu gets right.
    assert (pvlu["mcnemar"]["b"], pvlu["mcnemar"]["c"]) == (36, 0)
    assert pvlu["mcnemar"]["p"] == pytest.approx(binomtest(36, 36, 0.5).pvalue, rel=1e-12)
    assert pvlu["verdict"] == "better"
    frelu = next(a for a in board["arms"] if a["name"] == "frelu | all")
    assert frelu["verdict"] == "no_difference" and frelu["mcnemar"]["p"] == 1.0
    finished_at = done["finished_at"]
    assert sweep(api.store, api.queue, api.settings, api.storage) == []  # idempotent: nothing left to do
    assert api.client.get(f"/compare/{compare['id']}", headers=api.headers()).json()["finished_at"] == finished_at
    listed = api.client.get("/compare", headers=api.headers()).json()
    assert [c["id"] for c in listed["data"]] == [compare["id"]] and listed["has_more"] is False
    child = children(api, compare["id"])[0]["id"]
    r = api.client.delete(f"/jobs/{child}", headers=api.headers())
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_in_compare"
    assert api.client.delete(f"/compare/{compare['id']}", headers=api.headers()).status_code == 204
    assert api.client.get(f"/jobs?compare_id={compare['id']}", headers=api.headers()).json()["data"] == []


def test_a_failed_arm_is_reported_while_the_rest_succeed(api):
    compare = create(api)
    kids = children(api, compare["id"])
    original = next(c for c in kids if c["child_kind"] == "original")
    write_report(api, original, 0.5, [True] * 20 + [False] * 20, original=True)
    finish(api, original)
    compares = CompareStore(api.store)
    advance(compares, api.storage, api.queue, compare["id"])
    for child in (c for c in kids if c["child_kind"] == "train"):
        if child["arm"] == "frelu | all":
            finish(api, child, "failed", {"code": "invalid_input", "message": "replaced none", "param": "strategy"})
        else:
            write_report(api, child, 0.5, [True] * 20 + [False] * 20)
            finish(api, child)
    assert advance(compares, api.storage, api.queue, compare["id"]) == "succeeded"
    done = api.client.get(f"/compare/{compare['id']}", headers=api.headers()).json()
    frelu = next(a for a in done["arms"] if a["name"] == "frelu | all")
    assert [c["status"] for c in frelu["children"]] == ["failed", "failed"]
    assert next(r for r in done["leaderboard"] if r["arm"] == "frelu | all")["verdict"] == "failed"
    assert done["winner"]["arm"] == "relu" and done["winner"]["control"] is True


def test_when_the_original_fails_the_compare_fails_and_nothing_else_runs(api):
    compare = create(api)
    original = next(c for c in children(api, compare["id"]) if c["child_kind"] == "original")
    finish(api, original, "failed", {"code": "invalid_input", "message": "bad weights", "param": "model.weights"})
    assert advance(CompareStore(api.store), api.storage, api.queue, compare["id"]) == "failed"
    done = api.client.get(f"/compare/{compare['id']}", headers=api.headers()).json()
    assert done["error"]["code"] == "control_failed" and "bad weights" in done["error"]["message"]
    assert api.queue.sent == [original["id"]]
    assert {c["status"] for c in children(api, compare["id"]) if c["child_kind"] == "train"} == {"failed"}


def test_cancel_ends_every_child(api):
    compare = create(api)
    original = next(c for c in children(api, compare["id"]) if c["child_kind"] == "original")
    assert api.store.claim(original["id"], "w", 60) is not None  # the original is running
    r = api.client.post(f"/compare/{compare['id']}/cancel", headers=api.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelling"
    statuses = {c["child_kind"]: set() for c in children(api, compare["id"])}
    for c in children(api, compare["id"]):
        statuses[c["child_kind"]].add(c["status"])
    assert statuses == {"original": {"cancelling"}, "train": {"cancelled"}}
    assert api.store.finish(original["id"], "w", "cancelled")
    assert advance(CompareStore(api.store), api.storage, api.queue, compare["id"]) == "cancelled"
    assert api.client.post(f"/compare/{compare['id']}/cancel", headers=api.headers()).status_code == 409


def test_cancel_of_a_compare_that_never_started_ends_it_at_once(api):
    compare = create(api)
    r = api.client.post(f"/compare/{compare['id']}/cancel", headers=api.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"  # not at the reaper's next pass
    assert {c["status"] for c in children(api, compare["id"])} == {"cancelled"}
    assert sorted(api.queue.revoked) == sorted(c["id"] for c in children(api, compare["id"]))


@pytest.mark.parametrize("overrides,needle", [
    ({"inits": ["identity", "identity"]}, "each init may appear once"),
    ({"strategies": ["last:2", "last: 2"]}, "each strategy may appear once"),
    ({"train": {"trainable": "act"}}, "train.trainable must be one of bn+act, all in a compare job"),
])
def test_grids_that_could_never_finish_are_refused_up_front(api, overrides, needle):
    r = api.client.post("/compare", json=compare_body(**overrides), headers=api.headers())
    assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text
    assert children_count(api) == 0


def test_each_arm_gets_only_the_options_its_activation_takes(api):
    compare = create(api, activations=["leaky_relu", "pvlu", "convrelu"],
                     activation_options={"negative_slope": 0.2, "granularity": "channel", "fallback": "adarelu"})
    options = {c["arm"]: c["config"]["activation_options"] for c in children(api, compare["id"])}
    assert options["leaky_relu | all"]["negative_slope"] == 0.2
    assert options["pvlu | all"]["granularity"] == "channel" and "negative_slope" not in options["pvlu | all"]
    assert options["convrelu | all"]["fallback"] == "adarelu" and "granularity" not in options["convrelu | all"]
    assert set(options["relu"]) <= {"init", "convrelu_impl", "granularity", "fallback"}
    assert "negative_slope" not in options["relu"] and options["relu"].get("fallback") is None


def test_a_failed_send_releases_the_dispatch_and_the_next_advance_sends(api):
    compare = create(api)
    kids = children(api, compare["id"])
    original = next(c for c in kids if c["child_kind"] == "original")
    write_report(api, original, 0.5, [True] * N_VAL, original=True)
    finish(api, original)
    compares = CompareStore(api.store)
    api.queue.fail_send = ConnectionError("broker down")
    with pytest.raises(ConnectionError):
        advance(compares, api.storage, api.queue, compare["id"])
    assert not compares.is_dispatched(compare["id"])
    api.queue.fail_send = None
    sweep(api.store, api.queue, api.settings, api.storage)  # the reaper retries
    assert sorted(api.queue.sent[1:]) == sorted(c["id"] for c in kids if c["child_kind"] == "train")


def test_only_one_process_writes_the_leaderboard(api):
    compare = create(api)
    compares = CompareStore(api.store)
    assert compares.claim_finish(compare["id"]) is True
    assert compares.claim_finish(compare["id"]) is False  # another worker, the reaper: not twice
    assert compares.claim_finish(compare["id"], stale_after_s=0.0) is True  # a dead claimant's claim expires
