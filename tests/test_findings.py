"""Fixes as data: each fix's config change beside its text, in findings, JSON, and older run directories."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml

from nnprobe.app import train_config
from nnprobe.config import load_raw, validate_config
from nnprobe.findings import Finding, Fix, change, yaml_scalar
from nnprobe.reports.junit import finding_text

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SEED_CASES = ["relu-regression", "nan-cost", "relu-accuracy", "relu-output-ce"]


@pytest.mark.parametrize("value", [True, False, None, 0.1, 1e-05, 2.5e12, 3, "standardize", "true", "a: b",
                                   "1.0", "# not a comment"], ids=repr)
def test_yaml_scalar_reads_back_as_the_same_value(value):
    assert yaml.safe_load(f"key: {yaml_scalar(value)}")["key"] == value


def test_change_text_and_data_say_the_same_thing():
    fix = change({"optimizer.lr": 1e-05, "loss.from_logits": True}, "why")
    assert fix.set == {"optimizer.lr": 1e-05, "loss.from_logits": True}
    keys, _, why = fix.text.partition("  — ")
    assert why == "why"
    assert {k: yaml.safe_load(v) for k, v in (p.split(": ", 1) for p in keys.split(", "))} == fix.set
    assert fix.overrides == "--set optimizer.lr=1.0e-05 --set loss.from_logits=true"


def test_a_plain_string_is_a_text_only_fix():
    fix = Fix.of("clean the inputs")
    assert fix == "clean the inputs" and fix.set is None and fix.overrides == ""
    assert fix.to_dict() == {"text": "clean the inputs", "set": None}


def test_findings_json_before_fixes_carried_data_still_loads():
    """Run directories written before this change hold fixes as plain strings in findings.json."""
    old = {"code": "nonfinite", "severity": "error", "step": 4, "layer": None, "message": "m", "evidence": {},
           "fixes": ["data.normalize: standardize  — inputs span [0, 98]", "a lower optimizer.lr"]}
    finding = Finding.from_dict(old)
    assert [f.set for f in finding.fixes] == [None, None]
    assert finding.to_dict()["fixes"] == [{"text": old["fixes"][0], "set": None},
                                          {"text": old["fixes"][1], "set": None}]


def test_a_finding_round_trips_through_its_document_and_pickle():
    finding = Finding("dead-relu", "warning", 3, "dense1", "m", {"units": 4},
                      [change({"optimizer.lr": 0.5}, "large steps"), "advice"])
    assert Finding.from_dict(json.loads(json.dumps(finding.to_dict()))).to_dict() == finding.to_dict()
    back = pickle.loads(pickle.dumps(finding))
    assert back.fixes[0].set == {"optimizer.lr": 0.5} and back.fixes[1].set is None


def test_reassigned_fixes_become_fix_objects():
    finding = Finding("poor-init", "warning", 0, "dense1", "m", {}, [])
    finding.fixes = ["model.init: he_normal"]
    assert isinstance(finding.fixes[0], Fix)


def test_junit_body_shows_the_overrides_that_try_a_fix():
    finding = Finding("nonfinite", "error", 2, None, "m", {}, [change({"data.normalize": "standardize"}, "why"),
                                                               "advice"])
    text = finding_text(finding)
    assert "  - data.normalize: standardize  — why [--set data.normalize=standardize]" in text
    assert "  - advice\n" in text + "\n"


@pytest.fixture(scope="module")
def seed_case_fixes(tmp_path_factory):
    """Every fix the detectors give on the four seed cases (short runs)."""
    out = []
    for name in SEED_CASES:
        raw, text = load_raw(CONFIGS / f"{name}.yaml")
        raw["training"]["steps"] = 80
        cfg = validate_config(raw, source=name, text=text, base_dir=CONFIGS)
        result = train_config(cfg, config_path=CONFIGS / f"{name}.yaml", runs_root=tmp_path_factory.mktemp(name))
        out += [(name, f, fix) for f in result.findings for fix in f.fixes]
    return out


def test_seed_case_fixes_are_mostly_config_changes(seed_case_fixes):
    assert seed_case_fixes and sum(fix.set is not None for _, _, fix in seed_case_fixes) >= len(seed_case_fixes) - 2


def test_every_emitted_config_change_is_a_valid_config_and_matches_its_text(seed_case_fixes):
    for name, finding, fix in seed_case_fixes:
        if fix.set is None:
            continue
        raw, text = load_raw(CONFIGS / f"{name}.yaml")
        for key, value in fix.set.items():
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
            assert f"{key}: {yaml_scalar(value)}" in fix.text, (finding.code, fix.text)
        validate_config(raw, source=name, text=text, base_dir=CONFIGS)


def test_markdown_first_fix_gives_the_overrides_and_text_stays_plain():
    from nnprobe.reports.terminal import fix_line

    finding = Finding("nonfinite", "error", 2, None, "m", {}, [change({"loss.from_logits": True}, "why"), "more"])
    assert fix_line(finding) == "fix: loss.from_logits: true  — why (+1 more: nnprobe explain nonfinite)"
    assert fix_line(finding, overrides=True) == ("fix: loss.from_logits: true  — why [--set loss.from_logits=true]"
                                                 " (+1 more: nnprobe explain nonfinite)")


def test_explain_lists_the_repairs_fix_tries_in_order():
    from click.testing import CliRunner

    from nnprobe.cli import cli
    from nnprobe.repair.catalogue import REPAIRS

    out = CliRunner().invoke(cli, ["explain", "dead-relu", "--format", "markdown"]).stdout
    section = out.split("What `nnprobe fix` tries")[1].split("**References**")[0]
    names = [line[2:].split(":")[0] for line in section.splitlines() if line.startswith("- ")]
    assert names == [r.name for r in REPAIRS["dead-relu"]]
