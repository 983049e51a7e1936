"""`reluswap sites` and `reluswap activations` as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from converters.catalog import CATALOG


def test_sites_table_and_json_agree(reluswap_cli):
    as_json = reluswap_cli("sites", "--model", "torchvision:resnet50", "--image-size", "64", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    sites = data["sites"]
    assert len(sites) == 49
    assert sites[2]["name"] == "layer1.0.relu_1" and sites[2]["block"] == "layer1" and sites[2]["channels"] == 64
    assert sites[0]["convrelu"] is False and "maxpool" in sites[0]["convrelu_reason"]
    assert sum(s["convrelu"] for s in sites) == 47

    table = reluswap_cli("sites", "--model", "torchvision:resnet50", "--image-size", "64")
    assert table.returncode == 0, table.stderr
    assert "49 ReLU call sites" in table.stdout
    for site in sites:
        assert site["name"] in table.stdout


def test_sites_marks_a_strategy_and_reports_bad_input(reluswap_cli):
    marked = reluswap_cli("sites", "--model", "torchvision:resnet18", "--image-size", "32", "--json", "--strategy", "block:last")
    selected = [s["name"] for s in json.loads(marked.stdout)["sites"] if s["selected"]]
    assert selected == ["layer4.0.relu", "layer4.0.relu_1", "layer4.1.relu", "layer4.1.relu_1"]
    bad = reluswap_cli("sites", "--model", "torchvision:resnet18", "--image-size", "32", "--strategy", "last:x")
    assert bad.returncode == 2 and "'x' is not an integer" in bad.stderr and "Traceback" not in bad.stderr
    unknown = reluswap_cli("sites", "--model", "resnet18")
    assert unknown.returncode == 2 and "torchvision:resnet18" in unknown.stderr


def test_activations_lists_the_catalogue(reluswap_cli):
    listed = reluswap_cli("activations", "--json")
    assert [a["name"] for a in json.loads(listed.stdout)] == list(CATALOG)
    table = reluswap_cli("activations")
    assert all(name in table.stdout for name in CATALOG)


def test_catalogue_and_strategy_parsing_do_not_import_torch():
    """The API process validates configs and serves the catalogue without loading PyTorch."""
    code = (
        "import sys, converters, converters.catalog, converters.strategy, converters.vocabulary,"
        " converters.references;"
        "converters.strategy.parse_strategy('block:first;last:2');"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
