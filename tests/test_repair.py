"""`nnprobe fix`'s pure parts: verdicts against the seed spread, patches, the catalogue, the chain, the YAML text."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from nnprobe.config import load_config, validate_config
from nnprobe.diagnose.detectors import all_codes
from nnprobe.errors import ConfigError, NnprobeError
from nnprobe.findings import Finding, change
from nnprobe.repair.catalogue import REPAIRS, TUNE, Situation, repairs_for
from nnprobe.repair.fixer import resolved_dict
from nnprobe.repair.patches import apply_patch, changes_anything, combine, describe, get_dotted, patch_key
from nnprobe.repair.search import BUDGET, DONE, NO_CANDIDATE, RepairError, search, targets
from nnprobe.repair.verdicts import SeedRun, Spread, compare, judge, judge_tuning
from nnprobe.repair.yamltext import patch_yaml_text, unified_diff

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def run(seed, loss, *findings, accuracy=None, status="completed"):
    """A seeded run with findings given as (code, severity) or Finding."""
    fs = tuple(f if isinstance(f, Finding) else Finding(f[0], f[1], 0, None, "m", {}, []) for f in findings)
    return SeedRun(seed, status, loss, accuracy, fs)


def runs(losses, *findings, accuracies=None):
    return [run(i, loss, *findings, accuracy=None if accuracies is None else accuracies[i])
            for i, loss in enumerate(losses)]


DEAD = ("dead-relu", "warning")

# ---------------------------------------------------------------- the seed spread


def test_spread_is_median_and_range():
    s = Spread.of([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high) == (2.0, 1.0, 3.0)
    assert Spread.of([math.inf, 1.0, math.inf]).to_json() == {"median": None, "min": 1.0, "max": None}


@pytest.mark.parametrize("control, candidate, expected", [
    ((1.0, 0.9, 1.1), (1.15, 1.1, 1.2), "ok"),         # 0.15 behind, the control's range is 0.2
    ((1.0, 0.9, 1.1), (1.25, 1.2, 1.3), "worse"),      # 0.25 behind and every seed past 1.1
    ((1.0, 0.9, 1.1), (1.25, 1.0, 1.3), "unclear"),    # 0.25 behind, but a seed at 1.0
    ((1.0, 0.9, 1.1), (0.75, 0.7, 0.8), "better"),     # 0.25 ahead
    ((math.inf,) * 3, (5.0, 4.0, 6.0), "better"),      # the control diverged in every seed
    ((math.inf,) * 3, (math.inf,) * 3, "ok"),          # both diverged: the same result
    ((1.0, 1.0, 1.0), (1.0005, 1.0005, 1.0005), "ok"),  # float noise below RTOL
])
def test_compare_uses_the_control_range_as_yardstick(control, candidate, expected):
    assert compare(Spread(*control), Spread(*candidate)) == expected


def test_compare_by_ratio_reads_losses_on_a_log_scale():
    control = Spread(0.112, 0.0945, 0.268)  # a factor 2.8 apart
    assert compare(control, Spread(0.000175, 0.000158, 0.0028), log=True) == "better"
    assert compare(control, Spread(0.000175, 0.000158, 0.0028)) == "ok"  # linear: 0.11 < the 0.17 range
    assert compare(control, Spread(0.25, 0.2, 0.3), log=True) == "ok"  # 2.2x behind, the range is 2.8x
    assert compare(control, Spread(0.5, 0.3, 0.6), log=True) == "worse"  # 4.5x behind, every seed past 0.268


# ---------------------------------------------------------------- verdicts


def test_removing_the_finding_but_worsening_the_loss_is_worse():
    control = runs([1.0, 1.1, 0.9], DEAD)
    verdict = judge("dead-relu", control, runs([5.0, 6.0, 7.0]), "warning")
    assert verdict.verdict == "worse" and verdict.removes_finding and not verdict.is_step
    assert "final loss" in verdict.reason


def test_working_on_two_of_three_seeds_is_not_fixed():
    control = runs([1.0, 1.1, 0.9], DEAD)
    candidate = [run(0, 0.5), run(1, 0.5, DEAD), run(2, 0.5)]
    verdict = judge("dead-relu", control, candidate, "warning")
    assert verdict.verdict == "not fixed" and verdict.seeds_with_finding == 1
    assert verdict.reason == "dead-relu still found in 1 of 3 seeds"


def test_the_control_spread_decides_inconclusive():
    """The same candidate (median 1.25, a seed at 1.0): fixed against a wide control, inconclusive against a
    narrow one whose range it overlaps, worse against one it does not overlap."""
    candidate = [run(0, 1.0), run(1, 1.25), run(2, 1.3)]
    wide = runs([1.0, 0.6, 1.4], DEAD)
    narrow = runs([1.0, 0.95, 1.05], DEAD)
    tight_low = runs([0.5, 0.49, 0.51], DEAD)
    assert judge("dead-relu", wide, candidate, "warning").verdict == "fixed"
    assert judge("dead-relu", narrow, candidate, "warning").verdict == "inconclusive"
    assert judge("dead-relu", tight_low, candidate, "warning").verdict == "worse"


def test_a_finding_the_control_shows_in_some_seeds_only_is_inconclusive():
    control = [run(0, 1.0, DEAD), run(1, 1.0), run(2, 1.0, DEAD)]
    verdict = judge("dead-relu", control, runs([1.0, 1.0, 1.0]), "warning")
    assert verdict.verdict == "inconclusive" and verdict.control_seeds_with_finding == 2
    assert verdict.is_step


def test_a_new_finding_at_or_above_fail_on_is_not_fixed_and_below_it_does_not_count():
    control = runs([1.0, 1.0, 1.0], DEAD)
    replaced = judge("dead-relu", control, runs([1.0, 1.0, 1.0], ("loss-divergence", "warning")), "warning")
    assert replaced.verdict == "not fixed" and replaced.new_codes == ["loss-divergence"] and replaced.is_step
    info = judge("dead-relu", control, runs([1.0, 1.0, 1.0], ("loss-plateau", "info")), "warning")
    assert info.verdict == "fixed"


def test_worse_accuracy_is_worse_even_with_a_better_loss():
    control = runs([1.0, 1.0, 1.0], DEAD, accuracies=[0.9, 0.91, 0.92])
    verdict = judge("dead-relu", control, runs([0.1, 0.1, 0.1], accuracies=[0.5, 0.55, 0.6]), "warning")
    assert verdict.verdict == "worse" and "final accuracy" in verdict.reason


def test_a_loss_whose_scale_the_patch_changed_is_not_compared():
    control = runs([1.0, 1.0, 1.0], DEAD)
    candidate = runs([100.0, 100.0, 100.0])  # a summed loss: n times the mean
    assert judge("dead-relu", control, candidate, "warning").verdict == "worse"
    verdict = judge("dead-relu", control, candidate, "warning", loss_compared=False)
    assert verdict.verdict == "fixed" and not verdict.to_json()["loss_compared"]


def test_tuning_is_better_only_beyond_the_spread_and_clean():
    control = runs([1.0, 0.9, 1.1])
    assert judge_tuning(control, runs([0.5, 0.45, 0.55]), "warning").verdict == "better"
    assert judge_tuning(control, runs([0.95, 0.9, 1.0]), "warning").verdict == "not better"
    dirty = judge_tuning(control, runs([0.5, 0.45, 0.55], DEAD), "warning")
    assert dirty.verdict == "not better" and dirty.reason == "brings back dead-relu"


def test_seed_run_reads_the_train_document():
    doc = {"status": "diverged", "final_loss": None, "final_accuracy": 0.7,
           "findings": [{"code": "nonfinite", "severity": "error", "step": 3, "layer": None, "message": "m",
                         "evidence": {}, "fixes": [{"text": "loss.reduction: mean", "set": {"loss.reduction": "mean"}}]}]}
    r = SeedRun.from_doc(doc, 4, classification=True)
    assert (r.seed, r.final_loss, r.final_accuracy) == (4, math.inf, 0.0)  # a stopped run has no final numbers
    assert r.findings[0].fixes[0].set == {"loss.reduction": "mean"}
    done = SeedRun.from_doc({**doc, "status": "completed", "final_loss": 0.5}, 4, classification=False)
    assert (done.final_loss, done.final_accuracy) == (0.5, None)


# ---------------------------------------------------------------- patches


def test_apply_patch_sets_nested_keys_on_a_copy():
    config = {"optimizer": {"lr": 0.1}, "detectors": {}}
    out = apply_patch(config, {"optimizer.lr": 0.01, "detectors.dead-relu.fraction": 0.7})
    assert out == {"optimizer": {"lr": 0.01}, "detectors": {"dead-relu": {"fraction": 0.7}}}
    assert config == {"optimizer": {"lr": 0.1}, "detectors": {}}


def test_apply_patch_through_a_scalar_is_a_config_error():
    with pytest.raises(ConfigError, match="'optimizer' is 'sgd', not a mapping"):
        apply_patch({"optimizer": "sgd"}, {"optimizer.lr": 0.1})


def test_patch_helpers():
    config = {"loss": {"reduction": "mean"}}
    assert not changes_anything(config, {"loss.reduction": "mean"})
    assert changes_anything(config, {"loss.reduction": "sum"}) and changes_anything(config, {"loss.l2": 0.0})
    assert combine([{"a": 1, "b": 2}, {"a": 3}]) == {"b": 2, "a": 3}
    assert patch_key({"a": 1, "b": 2}) == patch_key({"b": 2, "a": 1})
    assert describe({"loss.from_logits": True, "optimizer.lr": 1e-05}) == "loss.from_logits: true, optimizer.lr: 1.0e-05"
    assert get_dotted(config, "loss.reduction") == "mean" and get_dotted(config, "loss.kind", "x") == "x"


# ---------------------------------------------------------------- the catalogue


def test_every_finding_code_has_a_catalogue_entry():
    assert set(all_codes()) <= set(REPAIRS)


@pytest.mark.parametrize("name", ["relu-regression", "nan-cost", "relu-accuracy", "relu-output-ce", "quickstart"])
def test_every_applicable_repair_gives_a_valid_config_that_it_changes(name):
    config = resolved_dict(load_config(CONFIGS / f"{name}.yaml"))
    for code in list(REPAIRS) + [TUNE]:
        for evidence in ({}, {"direction": "low"}):
            for repair, patch in repairs_for(code, Situation(config, evidence)):
                assert changes_anything(config, patch), (code, repair.name)
                validate_config(apply_patch(config, patch), source=f"{name} + {repair.name}", base_dir=CONFIGS)


def test_catalogue_repairs_follow_the_config():
    regression = resolved_dict(load_config(CONFIGS / "relu-regression.yaml"))
    nonfinite = repairs_for("nonfinite", Situation(regression, {}))
    assert [r.name for r, _ in nonfinite][:2] == ["data scale", "clip gradients"]  # no log/output repair for mse
    assert nonfinite[0][1] == {"data.normalize": "standardize", "data.normalize_target": "standardize",
                               "loss.reduction": "mean"}
    accuracy = resolved_dict(load_config(CONFIGS / "relu-accuracy.yaml"))
    first, patch = repairs_for("output-loss-mismatch", Situation(accuracy, {}))[0]
    assert patch == {"loss.kind": "cross_entropy", "loss.from_logits": True}
    low = dict((r.name, p) for r, p in repairs_for("large-update-ratio", Situation(accuracy, {"direction": "low"})))
    assert low["learning rate by direction"] == {"optimizer.lr": 50.0}


# ---------------------------------------------------------------- the chain, on scripted runs


BROKEN = {"seed": 0, "loss": {"reduction": "sum"}, "model": {"init": "uniform", "activation": "relu"},
          "optimizer": {"kind": "sgd", "lr": 0.1, "clip_grad_norm": None}, "data": {"n_samples": 100}}


def scripted(config: dict, seed: int) -> SeedRun:
    """A stand-in for training: summed loss diverges (its fix offered by the finding), a uniform init is
    poor-init (its fix only in the catalogue); the loss falls with the learning rate up to 0.3."""
    findings = []
    if get_dotted(config, "loss.reduction") == "sum":
        findings.append(Finding("nonfinite", "error", 3, None, "m", {},
                                [change({"optimizer.lr": 0.01}, "lower"), change({"loss.reduction": "mean"}, "mean"),
                                 "advice, not a config change"]))
    if get_dotted(config, "model.init") == "uniform":
        findings.append(Finding("poor-init", "warning", 0, "dense1", "m", {}, []))
    lr = get_dotted(config, "optimizer.lr")
    loss = math.inf if findings and findings[0].code == "nonfinite" else (1.0 + 0.01 * seed) / min(lr, 0.3)
    if lr > 0.3:
        findings.append(Finding("loss-divergence", "warning", 10, None, "m", {}, []))
    return SeedRun(seed, "completed" if math.isfinite(loss) else "diverged", loss, None, tuple(findings))


def scripted_train(configs, label):
    return [scripted(c, c["seed"]) for c in configs], None


def no_check(config):
    return None


def test_the_chain_fixes_the_worst_finding_first_then_the_next_then_tunes():
    result = search(copy.deepcopy(BROKEN), train=scripted_train, validate=no_check, seeds=3, budget=60)
    steps = [(a.finding, a.candidate.patch, a.word, a.candidate.origin) for a in result.attempts]
    assert steps[0] == ("nonfinite", {"optimizer.lr": 0.01}, "not fixed", "finding")
    assert steps[1] == ("nonfinite", {"loss.reduction": "mean"}, "fixed", "finding")  # the advice is skipped
    assert steps[2][:3] == ("poor-init", {"model.bias_init": "zeros", "model.init": "he_normal"}, "fixed")
    assert steps[2][3] == "catalogue"
    assert [a.candidate.patch for a in result.chain] == [
        {"loss.reduction": "mean"}, {"model.bias_init": "zeros", "model.init": "he_normal"},
        {"optimizer.lr": 0.3}]  # x10 = 1.0 brings loss-divergence back, x3 = 0.3 is better
    assert result.ok and result.stopped == DONE and result.left == []
    assert result.patch == {"loss.reduction": "mean", "model.bias_init": "zeros", "model.init": "he_normal",
                            "optimizer.lr": 0.3}
    assert result.runs_used == 3 * (1 + len(result.attempts))
    assert result.config["optimizer"]["lr"] == 0.3 and result.config["loss"]["reduction"] == "mean"


def test_a_healthy_config_is_left_unchanged_and_not_tuned():
    healthy = apply_patch(BROKEN, {"loss.reduction": "mean", "model.init": "he_normal"})
    result = search(healthy, train=scripted_train, validate=no_check, seeds=3, budget=60)
    assert result.ok and result.attempts == [] and result.patch == {} and result.runs_used == 3


def test_the_budget_stops_the_chain_before_a_run_that_does_not_fit():
    result = search(copy.deepcopy(BROKEN), train=scripted_train, validate=no_check, seeds=3, budget=7)
    assert result.runs_used == 6 and result.stopped == BUDGET and not result.ok
    assert [t.code for t in result.left] == ["nonfinite", "poor-init"]


def test_a_budget_below_the_control_is_bad_input():
    with pytest.raises(NnprobeError, match="--budget 2 must be at least --seeds 3"):
        search(copy.deepcopy(BROKEN), train=scripted_train, validate=no_check, seeds=3, budget=2)


def test_an_invalid_patched_config_is_recorded_without_spending_runs():
    def validate(config):
        if get_dotted(config, "optimizer.lr") == 0.01:
            raise ConfigError("optimizer.lr: 0.01 is not allowed here")

    result = search(copy.deepcopy(BROKEN), train=scripted_train, validate=validate, seeds=3, budget=60)
    first = result.attempts[0]
    assert first.word == "invalid" and "not allowed" in first.error and first.verdict is None
    assert result.runs_used == 3 * (1 + sum(a.verdict is not None for a in result.attempts))


def test_a_control_that_cannot_train_is_a_repair_error():
    with pytest.raises(RepairError, match="bad data"):
        search(copy.deepcopy(BROKEN), train=lambda configs, label: ([], "bad data"), validate=no_check)


def test_without_any_candidate_the_finding_is_set_aside_and_reported():
    stuck = apply_patch(BROKEN, {"loss.reduction": "mean", "model.init": "he_normal", "model.bias_init": "zeros"})

    def train(configs, label):
        return [SeedRun(c["seed"], "completed", 1.0, None, (Finding("gradient-mismatch", "error", None, None, "m",
                                                                    {}, ["fix derivative(z)"]),)) for c in configs], None

    result = search(stuck, train=train, validate=no_check)
    assert result.stopped == NO_CANDIDATE and not result.ok and result.attempts == []
    assert [t.code for t in result.left] == ["gradient-mismatch"]


def test_a_step_is_taken_when_nothing_fixes_outright():
    """The only candidate removes the error but leaves a warning no control seed had: taken as a step."""
    def train(configs, label):
        out = []
        for c in configs:
            fs = ((Finding("log-zero", "error", 1, None, "m", {}, [change({"loss.from_logits": True}, "")]),)
                  if not get_dotted(c, "loss.from_logits") else (Finding("dead-relu", "warning", 9, "d", "m", {},
                                                                         []),))
            out.append(SeedRun(c["seed"], "completed", 1.0, None, fs))
        return out, None

    config = {"seed": 0, "loss": {"kind": "mse", "from_logits": False}, "model": {"activation": "tanh"},
              "optimizer": {"lr": 0.1}}
    result = search(config, train=train, validate=no_check, seeds=2, budget=8, fail_on="error")
    assert result.chain[0].as_step is False  # fail_on error: dead-relu (warning) is not new at that level
    result = search(config, train=train, validate=no_check, seeds=2, budget=8, fail_on="warning")
    first = result.chain[0]
    assert first.word == "not fixed" and first.as_step and first.verdict.new_codes == ["dead-relu"]


def test_targets_are_ordered_worst_first():
    rs = [run(0, 1.0, DEAD, ("loss-divergence", "warning")), run(1, 1.0, DEAD), run(2, 1.0, ("nonfinite", "error"))]
    assert [(t.code, t.seeds) for t in targets(rs, "warning")] == [
        ("nonfinite", 1), ("dead-relu", 2), ("loss-divergence", 1)]
    assert targets(rs, "error")[0].code == "nonfinite" and len(targets(rs, "error")) == 1


def test_the_chain_is_deterministic():
    first = search(copy.deepcopy(BROKEN), train=scripted_train, validate=no_check)
    second = search(copy.deepcopy(BROKEN), train=scripted_train, validate=no_check)
    assert [a.to_json() for a in first.attempts] == [a.to_json() for a in second.attempts]


# ---------------------------------------------------------------- the fixed config's text


ORIGINAL = """\
# A config with comments
name: demo   # its name
seed: 0
data:
  source: affine   # x in [0, 100)
  n_samples: 50
loss: {kind: mse, reduction: sum}
optimizer:
  lr: 0.001  # too small?
training:
  steps: 20
"""


def test_patched_text_keeps_comments_and_key_order():
    patch = {"loss.reduction": "mean", "optimizer.lr": 0.01, "data.normalize": "standardize",
             "model.init": "he_normal", "optimizer.clip_grad_norm": 1.0}
    out = patch_yaml_text(ORIGINAL, patch)
    assert out.kept_layout
    assert yaml.safe_load(out.text) == apply_patch(yaml.safe_load(ORIGINAL), patch)
    for comment in ("# A config with comments", "# its name", "# x in [0, 100)", "# too small?"):
        assert comment in out.text
    assert "  lr: 0.01  # too small?\n  clip_grad_norm: 1.0\n" in out.text
    assert "loss: {kind: mse, reduction: mean}" in out.text
    assert "  n_samples: 50\n  normalize: standardize\n" in out.text
    assert out.text.endswith("model:\n  init: he_normal\n")
    keys = list(yaml.safe_load(out.text))
    assert keys == ["name", "seed", "data", "loss", "optimizer", "training", "model"]


def test_a_value_that_cannot_be_edited_in_place_falls_back_to_a_dump():
    out = patch_yaml_text(ORIGINAL, {"data": "not a mapping"})
    assert not out.kept_layout and yaml.safe_load(out.text)["data"] == "not a mapping"
    assert "#" not in out.text


def test_unified_diff_names_both_files():
    after = patch_yaml_text(ORIGINAL, {"optimizer.lr": 0.01}).text
    diff = unified_diff(ORIGINAL, after, "a.yaml", "b.yaml")
    assert diff.startswith("--- a.yaml\n+++ b.yaml\n")
    assert "-  lr: 0.001  # too small?\n+  lr: 0.01  # too small?\n" in diff
    assert unified_diff(ORIGINAL, ORIGINAL, "a", "b") == ""


def test_a_patch_later_repairs_made_unnecessary_is_dropped():
    """Clipping stops the NaN of a summed loss but leaves exploding gradients; once the mean loss fixes
    those, the config without the clipping is just as clean and as good, so the clipping is dropped."""
    def train(configs, label):
        out = []
        for c in configs:
            summed, clipped = get_dotted(c, "loss.reduction") == "sum", get_dotted(c, "optimizer.clip_grad_norm")
            fs = []
            if summed and not clipped:
                fs.append(Finding("nonfinite", "error", 2, None, "m", {},
                                  [change({"optimizer.clip_grad_norm": 1.0}, ""), change({"loss.reduction": "mean"},
                                                                                         "")]))
            if summed:
                fs.append(Finding("exploding-gradients", "warning", 0, None, "m", {},
                                  [change({"loss.reduction": "mean"}, "")]))
            loss = math.inf if fs and fs[0].code == "nonfinite" else 1.0 + 0.01 * c["seed"]
            out.append(SeedRun(c["seed"], "completed", loss, None, tuple(fs)))
        return out, None

    result = search(copy.deepcopy(BROKEN), train=train, validate=no_check, seeds=3, budget=80)
    clip, mean = result.attempts[0], result.attempts[1]
    assert clip.candidate.patch == {"optimizer.clip_grad_norm": 1.0} and clip.accepted and clip.dropped
    assert mean.candidate.patch == {"loss.reduction": "mean"} and mean.accepted and not mean.dropped
    pruning = result.attempts[2]
    assert pruning.finding == "pruning" and pruning.word == "not needed" and not pruning.accepted
    assert pruning.candidate.patch == {"optimizer.clip_grad_norm": None}
    assert result.patch == {"loss.reduction": "mean"} and result.ok
    assert result.config["optimizer"]["clip_grad_norm"] is None
    assert [a.finding for a in result.attempts[3:]] == ["tuning", "tuning"]  # the loss ignores lr: not better
    assert [a for a in result.chain] == [mean]
