"""The dashboard at /ui: its static route (no browser), then the real thing in headless Chromium
against the embedded deployment (real redis-server, API under uvicorn, a Celery worker): sign in,
submit a job through the form (with a weights upload), watch it succeed, download model.onnx, and
check that job metadata is shown as text, never run as markup; then a compare job through its form:
its arms and children, the cancel button, its leaderboard and winner.

The browser is Debian's chromium (/usr/bin/chromium), driven by Playwright; no Playwright browser
download. Without either, the browser test skips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import ALICE, make_settings

from service.app import create_app
from service.queue import MemoryQueue
from service.routes import ui

CHROMIUM = Path("/usr/bin/chromium")
XSS = "<script>alert(1)</script>"


# ---- the static route ----------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path):
    app = create_app(make_settings(tmp_path), queue=MemoryQueue())
    with TestClient(app) as c:
        yield c


def test_static_route_headers_and_types(client):
    for path in ("/ui", "/ui/", "/ui/index.html"):
        r = client.get(path)  # the shell holds no data: no key needed
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "img-src 'self' blob: data:" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/ui/app.js">' in r.text
        assert "<script>" not in r.text  # no inline script (the CSP would block it anyway)
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for name in ("app.js", "api.js", "dom.js", "form.js", "artifacts.js", "jobs.js", "job.js", "submit.js", "compares.js",
                 "compare.js", "compare-new.js", "app.css"):
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == types[Path(name).suffix]
        assert r.headers["x-content-type-options"] == "nosniff"
    # Data calls still need the key.
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200


def test_static_route_refuses_traversal_and_unknown_assets(client):
    for path in ("/ui/nope.js", "/ui/index.htm", "/ui/ui.py", "/ui/..%2fapp.py", "/ui/..%2f..%2fservice%2fapp.py",
                 "/ui/%2e%2e/%2e%2e/service/app.py", "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml", "/ui/..%2froutes%2fui.py",
                 "/ui/%2fetc%2fpasswd", "/ui/sub/app.js", "/ui/.hidden.js"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert r.headers["content-type"] == "application/json"
    # A client that normalises the path never reaches the ui route at all.
    assert client.get("/ui/../service/app.py").status_code == 404
    assert "/ui" not in client.get("/openapi.json").json()["paths"]


def test_assets_are_confined_to_the_ui_folder(tmp_path, monkeypatch):
    root = tmp_path / "ui"
    root.mkdir()
    (root / "a.js").write_text("export {};")
    (tmp_path / "secret.js").write_text("secret")
    (root / "link.js").symlink_to(tmp_path / "secret.js")
    (root / "sub").mkdir()
    (root / "sub" / "b.js").write_text("")
    monkeypatch.setattr(ui, "UI_DIR", root.resolve())
    assert ui.resolve_asset("a.js") == (root / "a.js").resolve()
    for name in ("../secret.js", "link.js", "sub/b.js", "/etc/passwd", str(tmp_path / "secret.js"), "", "a.js\0",
                 "..\\secret.js", "sub/../../secret.js", "missing.js"):
        assert ui.resolve_asset(name) is None, name


def test_package_data_ships_the_ui():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service"]
    shipped = {p.name for pattern in patterns for p in ui.UI_DIR.parent.glob(pattern)}
    assert shipped == {p.name for p in ui.UI_DIR.iterdir() if p.suffix in (".html", ".js", ".css")}
    assert "index.html" in shipped


# ---- the browser ---------------------------------------------------------------------------------


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (Python) is not installed: pip install playwright")
    return sync_playwright


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from reluswap.supervisor import start_embedded

    _playwright()  # skip before starting anything
    embedded = start_embedded(tmp_path_factory.mktemp("ui-service"))
    yield embedded
    embedded.stop(timeout=10)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A random-init resnet18 state_dict (10 classes), for the form's weights upload."""
    import torch
    from safetensors.torch import save_file

    from converters.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("torchvision:resnet18", num_classes=10).state_dict().items()},
              str(path))
    return path


@pytest.mark.slow
def test_dashboard_in_a_browser(deployment, weights_file, tmp_path):
    sync_playwright = _playwright()
    import onnx

    shots = tmp_path / "screenshots"
    shots.mkdir()
    dialogs: list[str] = []
    csp_errors: list[str] = []
    api = httpx.Client(base_url=deployment.url, headers={"Authorization": f"Bearer {deployment.api_key}"}, timeout=30)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
            page.set_default_timeout(30_000)

            def on_dialog(dialog):
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("console", lambda m: csp_errors.append(m.text)
                    if m.type == "error" and "Content Security Policy" in m.text else None)

            # Sign in: the shell loads without a key, then asks for one.
            page.goto(f"{deployment.url}/ui")
            page.wait_for_selector("#api-key")
            page.screenshot(path=shots / "1-sign-in.png", full_page=True)
            page.fill("#api-key", deployment.api_key)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#jobs-table table")
            assert page.evaluate("sessionStorage.getItem('reluswap.apiKey')") == deployment.api_key
            assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []

            # Submit a tiny job through the form, uploading the weights.
            page.click("nav a[data-view=new]")
            page.wait_for_selector("#activation:not([disabled])")
            page.fill("#arch", "torchvision:resnet18")
            page.fill("#num-classes", "10")
            page.set_input_files("#weights-file", str(weights_file))
            assert page.input_value("#weights-mode") == "upload"
            page.fill("#dataset-uri", "builtin:digits")
            page.fill("#image-size", "16")
            page.select_option("#activation", "pvlu")
            page.wait_for_selector("#opt-granularity")
            page.fill("#max-steps", "4")
            page.fill("#batch-size", "32")
            page.fill("#stats-batches", "2")
            page.uncheck("#export-pt2")
            page.fill("#metadata", "note=browser test")
            page.screenshot(path=shots / "2-new-job.png", full_page=True)
            page.click("#submit")
            page.wait_for_url("**/ui#/jobs/job_*")
            job_id = page.inner_text("#job-id")
            config = api.get(f"/jobs/{job_id}").json()["config"]
            assert config["model"] == {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "upload"}
            assert config["train"]["max_steps"] == 4 and config["train"]["batch_size"] == 32
            assert config["activation"] == "pvlu" and config["metadata"] == {"note": "browser test"}

            # The job page follows the job live.
            page.wait_for_selector("#progress-bar")
            page.wait_for_selector("#job-status[data-status=running], #job-status[data-status=succeeded]",
                                   timeout=120_000)
            page.wait_for_selector("#events[data-source=stream]")  # the SSE stream, read with fetch()
            page.screenshot(path=shots / "3-job-running.png", full_page=True)

            # Meanwhile: metadata holding markup is shown as text; no script runs, no dialog opens. The job
            # waits behind the running one, so its cancel ends it at once.
            r = api.post("/finetune", json={
                "model": {"arch": "torchvision:resnet18", "num_classes": 10},
                "dataset": {"uri": "builtin:digits", "image_size": 16},
                "activation": "relu",
                "train": {"max_steps": 1},
                "export": {"onnx": False, "pt2": False},
                "metadata": {"note": XSS},
            })
            assert r.status_code == 202, r.text
            xss_id = r.json()["id"]
            api.post(f"/jobs/{xss_id}/cancel")
            page.click("nav a[data-view=jobs]")
            row = page.wait_for_selector(f"tr[data-job-id='{xss_id}']")
            assert row.query_selector("td.metadata").inner_text() == f"note: {XSS}"
            page.wait_for_selector(f"tr[data-job-id='{job_id}']")
            page.screenshot(path=shots / "4-jobs.png", full_page=True)
            row.query_selector("a").click()
            page.wait_for_selector("#metadata dd")
            assert page.inner_text("#metadata dd") == XSS
            assert page.locator("main script").count() == 0
            page.screenshot(path=shots / "5-xss-job.png", full_page=True)

            # Back to the job (the list links to it), until it succeeds.
            page.click("nav a[data-view=jobs]")
            page.click(f"tr[data-job-id='{job_id}'] a")
            page.wait_for_selector("#job-status[data-status=succeeded], #job-status[data-status=failed]",
                                   timeout=180_000)
            assert page.get_attribute("#job-status", "data-status") == "succeeded", \
                api.get(f"/jobs/{job_id}").json()["error"]
            assert page.get_attribute("#progress-bar", "value") == "1"
            page.wait_for_selector("[data-download='model.onnx']")
            names = page.locator("#artifacts td.mono").all_inner_texts()
            assert {"model.onnx", "report.json"} <= set(names), names
            assert page.locator("#metrics tbody tr").count() > 3
            assert page.locator("#events tbody tr").count() > 3
            page.screenshot(path=shots / "6-job-succeeded.png", full_page=True)

            # Downloads go through fetch (the key is a header), then a blob: URL.
            with page.expect_download() as info:
                page.click("[data-download='model.onnx']")
            download = info.value
            assert download.suggested_filename == "model.onnx"
            saved = tmp_path / "model.onnx"
            download.save_as(saved)
            assert saved.stat().st_size > 0
            model = onnx.load(str(saved))
            assert len(model.graph.node) > 0
            # The report: report.html shown from a blob: URL, and every *.png shown. Until the worker writes
            # them, stand-ins are put among the job's artifacts, so the page's handling is still checked.
            artifacts_dir = Path(deployment.env["RELUSWAP_DATA_DIR"]) / "storage" / "jobs" / job_id / "artifacts"
            if not any(n.endswith(".png") for n in names):
                shutil.copy(shots / "1-sign-in.png", artifacts_dir / "training_curves.png")
            stand_in_report = "report.html" not in names
            if stand_in_report:  # its script must not run: the frame is sandboxed
                (artifacts_dir / "report.html").write_text(
                    "<!doctype html><title>report</title><style>h1 { color: rgb(0, 90, 0) }</style><h1>Stand-in report</h1>"
                    "<script>parent.document.title = 'pwned'; alert('report')</script>")
            page.reload()
            page.wait_for_selector("#open-report")
            page.wait_for_function("() => { const imgs = [...document.querySelectorAll('#plots img')];"
                                   " return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }")
            assert page.locator("#plots img").first.get_attribute("src").startswith("blob:")
            page.screenshot(path=shots / "7-job-report.png", full_page=True)
            assert csp_errors == []  # the dashboard itself needs nothing the policy forbids
            page.click("#open-report")  # shown in a frame sandboxed without scripts
            assert page.get_attribute("#report-frame", "sandbox") == ""
            assert page.get_attribute("#report-frame", "src").startswith("blob:")
            report = page.frame_locator("#report-frame")
            report.locator("body *").first.wait_for()
            if stand_in_report:
                assert report.locator("h1").inner_text() == "Stand-in report"
                page.wait_for_timeout(300)
                assert page.title() != "pwned"
            page.screenshot(path=shots / "8-report.png", full_page=True)

            # The jobs list shows its final status.
            page.click("nav a[data-view=jobs]")
            page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-status=succeeded]")
            assert dialogs == []
            assert api.get(f"/jobs/{xss_id}").json()["status"] == "cancelled"
        finally:
            browser.close()
            api.close()
    assert {"1-sign-in.png", "2-new-job.png", "3-job-running.png", "4-jobs.png", "5-xss-job.png",
            "6-job-succeeded.png"} <= {p.name for p in shots.iterdir()}



def _sign_in(page, deployment) -> None:
    page.goto(f"{deployment.url}/ui")
    page.fill("#api-key", deployment.api_key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table table")


def _chips(page, arm: str) -> list[str]:
    """The statuses of an arm's child chips on the compare page."""
    return page.eval_on_selector_all(f"#arms tr[data-arm='{arm}'] a.chip", "els => els.map(e => e.dataset.status)")


def _compare_from_reports(deployment, metadata: dict) -> dict:
    """A compare on the deployment's database and storage whose children "ran" from hand-written
    report.json files (as in test_compare_api), then ended by the real advance(): its leaderboard
    files are the real ones, without the minutes three real children take on two cores. pvlu is
    better than the relu control, frelu worse."""
    from service.compare_config import parse_compare_config, plan_children
    from service.compare_store import CompareStore
    from service.compares import advance
    from service.queue import MemoryQueue
    from service.storage import LocalStorage
    from service.store import JobStore

    data_dir = Path(deployment.env["RELUSWAP_DATA_DIR"])
    store = JobStore(deployment.env.get("RELUSWAP_DATABASE_URL") or f"sqlite:///{data_dir / 'reluswap.db'}",
                     create_tables=False)
    storage = LocalStorage(data_dir / "storage")
    try:
        cfg = parse_compare_config({
            "model": {"arch": "torchvision:resnet18", "num_classes": 10},
            "dataset": {"uri": "builtin:digits", "image_size": 16},
            "activations": ["pvlu", "frelu"], "seeds": 2, "train": {"max_steps": 1},
            "export": {"onnx": False, "pt2": False}, "metadata": metadata,
        })
        compares = CompareStore(store)
        # Created here, not through the API: nothing is sent to the queue, so no worker runs them.
        compare = compares.create("local", cfg.model_dump(mode="json"), ["original", "relu"], [
            {"arm": c.arm, "kind": c.kind, "seed_index": c.seed_index, "config": c.config} for c in plan_children(cfg)])
        right = {"original": 20, "relu": 20, "pvlu | all": 36, "frelu | all": 8}  # of 40 validation images
        kids = compares.children(compare["id"])
        for kid in kids:
            n = right[kid["arm"]]
            bits = "1" * n + "0" * (40 - n)
            if kid["child_kind"] == "original":
                report = {"baseline": {"accuracy": n / 40, "loss": 1.0, "samples": 40, "test_accuracy": n / 40},
                          "predictions": {"val_correct": bits}}
            else:
                acc = n / 40 + 0.01 * kid["seed_index"]
                report = {"metrics": {"final_accuracy": acc}, "final": {"accuracy": acc, "test_accuracy": acc},
                          "peak": {"epoch": 1, "val_accuracy": acc, "test_accuracy": acc},
                          "predictions": {"val_correct": bits}}
            (storage.artifacts_dir(kid["id"]) / "report.json").write_text(json.dumps(report))
        # The original last: until it ends, the API's reaper has nothing to dispatch.
        for kid in sorted(kids, key=lambda k: k["child_kind"] == "original"):
            assert store.claim(kid["id"], "ui-test", 60) is not None
            assert store.finish(kid["id"], "ui-test", "succeeded")
        advance(compares, storage, MemoryQueue(), compare["id"])
        compare = compares.get(compare["id"])
        assert compare["status"] == "succeeded", compare["error"]
        return compare
    finally:
        store.close()


@pytest.mark.slow
def test_compare_in_a_browser(deployment, tmp_path):
    sync_playwright = _playwright()

    shots = tmp_path / "screenshots"
    shots.mkdir()
    alerts: list[str] = []
    csp_errors: list[str] = []
    api = httpx.Client(base_url=deployment.url, headers={"Authorization": f"Bearer {deployment.api_key}"}, timeout=30)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
            page.set_default_timeout(30_000)

            def on_dialog(dialog):
                if dialog.type == "confirm":  # the cancel button asks first
                    dialog.accept()
                    return
                alerts.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("console", lambda m: csp_errors.append(m.text)
                    if m.type == "error" and "Content Security Policy" in m.text else None)
            _sign_in(page, deployment)

            # The list, then the form: a one-arm grid (plus the two controls), one seed, two steps.
            page.click("nav a[data-view=compare]")
            page.wait_for_selector("#compares-table table")
            page.click("#new-compare")
            page.wait_for_selector("#compare-activations[data-loaded=true]")
            assert page.is_checked("#act-relu") and page.is_disabled("#act-relu")  # always the control
            page.fill("#arch", "torchvision:resnet18")
            page.fill("#num-classes", "10")
            page.fill("#dataset-uri", "builtin:digits")
            page.fill("#image-size", "16")
            page.check("#act-pvlu")
            page.fill("#strategies", "all")
            page.fill("#seeds", "1")
            page.fill("#max-steps", "2")
            page.fill("#batch-size", "32")
            page.fill("#stats-batches", "2")
            page.uncheck("#export-onnx")
            page.uncheck("#export-pt2")
            page.fill("#metadata", "note=compare from the browser")
            assert "3 jobs" in page.inner_text("#compare-size")
            page.screenshot(path=shots / "1-new-compare.png", full_page=True)
            page.click("#compare-submit")
            page.wait_for_url("**/ui#/compare/cmp_*")
            compare_id = page.inner_text("#compare-id")
            config = api.get(f"/compare/{compare_id}").json()["config"]
            assert config["activations"] == ["pvlu"] and config["strategies"] == ["all"] and config["seeds"] == 1
            assert config["train"]["max_steps"] == 2 and config["train"]["batch_size"] == 32
            assert config["export"]["onnx"] is False and config["export"]["pt2"] is False
            assert config["metadata"] == {"note": "compare from the browser"}

            # Its arms: the controls first and marked, each child a status chip linking to its job.
            page.wait_for_selector("#arms tr[data-arm='pvlu | all'] a.chip")
            assert page.eval_on_selector_all("#arms tbody tr", "rs => rs.map(r => r.dataset.arm)") == [
                "original", "relu", "pvlu | all"]
            assert page.get_attribute("#arms tr[data-arm=relu]", "data-control") == "true"
            assert page.get_attribute("#arms tr[data-arm='pvlu | all']", "data-control") == "false"
            for arm in ("original", "relu", "pvlu | all"):
                assert len(_chips(page, arm)) == 1
            page.wait_for_selector("#compare-progress-bar")
            page.screenshot(path=shots / "2-compare-running.png", full_page=True)

            # A child's job page links back to its compare.
            page.click("#arms tr[data-arm=relu] a.chip")
            page.wait_for_selector("#compare-link")
            assert "(arm relu, seed 0)" in page.inner_text("#compare-arm")
            page.click("#compare-link")
            page.wait_for_selector("#arms a.chip")

            # Training three children takes minutes on two cores: cancel it from its page instead; every
            # child ends cancelled (the running original stops, the waiting ones at once).
            page.click("#compare-cancel")
            page.wait_for_function("() => { const cs = [...document.querySelectorAll('#arms a.chip')];"
                                   " return cs.length === 3 && cs.every((c) => c.dataset.status === 'cancelled'); }",
                                   timeout=90_000)
            # The compare itself ends at the next advance (the worker's, or the reaper's when no child ran).
            assert page.get_attribute("#compare-status", "data-status") in ("cancelling", "cancelled")
            assert page.is_disabled("#compare-cancel")
            page.screenshot(path=shots / "3-compare-cancelled.png", full_page=True)

            # A finished compare (its metadata holds markup: shown as text, nothing runs): the list shows its
            # winner; its page the leaderboard with verdicts, the winner and why, leaderboard.png, downloads.
            done = _compare_from_reports(deployment, {"note": XSS})
            winner = done["winner"]
            assert winner["arm"] == "pvlu | all" and not winner["control"]
            page.click("nav a[data-view=compare]")
            row = page.wait_for_selector(f"tr[data-compare-id='{done['id']}'][data-status=succeeded]")
            assert row.query_selector("td.metadata").inner_text() == f"note: {XSS}"
            assert row.query_selector("td.winner").inner_text() == winner["arm"]
            page.wait_for_selector(f"tr[data-compare-id='{compare_id}']")
            page.screenshot(path=shots / "4-compares.png", full_page=True)
            row.query_selector("a").click()
            page.wait_for_selector("#leaderboard tbody tr")
            assert page.inner_text("#compare-metadata dd") == XSS
            assert page.locator("main script").count() == 0
            rows = page.eval_on_selector_all(
                "#leaderboard tbody tr", "rs => rs.map(r => [r.dataset.arm, r.querySelector('[data-verdict]').dataset.verdict])")
            assert rows == [["pvlu | all", "better"], ["relu", "control"], ["frelu | all", "worse"]], rows
            assert page.get_attribute("#leaderboard tr[data-arm='pvlu | all']", "class") == "winner-row"
            assert page.inner_text("#winner-arm") == winner["arm"]
            assert page.inner_text("#winner-reason") == winner["reason"]
            assert all(_chips(page, arm) == ["succeeded"] * (1 if arm == "original" else 2)
                       for arm in ("original", "relu", "pvlu | all", "frelu | all"))
            page.wait_for_function("() => { const i = document.querySelector('#leaderboard-img');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            assert page.get_attribute("#leaderboard-img", "src").startswith("blob:")
            with page.expect_download() as info:
                page.click("[data-download='leaderboard.csv']")
            saved = tmp_path / "leaderboard.csv"
            info.value.save_as(saved)
            assert "pvlu | all" in saved.read_text()
            page.screenshot(path=shots / "5-compare-succeeded.png", full_page=True)
            assert alerts == [] and csp_errors == []
        finally:
            browser.close()
            api.close()
