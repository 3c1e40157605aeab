"""Tables and HTML report writers produce the expected files and rows."""

import csv
import json

import numpy as np
import pytest

from miso_mapper.evaluate.metrics import binary_metrics, multiclass_metrics
from miso_mapper.evaluate.report import per_class_rows, summary_rows, write_outputs
from miso_mapper.evaluate.run import MODELS, Evaluation, Predictions


def fake_evaluation():
    rng = np.random.default_rng(0)
    preds, folds = {}, {}
    ids = [f"P{i}" for i in range(40)]
    for scheme in ("random", "spatial-1km"):
        for task in ("permafrost", "taxonomy"):
            for model in MODELS:
                p = Predictions()
                for f in range(2):
                    sl = slice(20 * f, 20 * (f + 1))
                    truth = rng.integers(0, 2 if task == "permafrost" else 7, 20)
                    prob = rng.uniform(size=20) if task == "permafrost" else rng.dirichlet(np.ones(7), 20)
                    p.ids += ids[sl]
                    p.fold += [f + 1] * 20
                    p.truth += truth.tolist()
                    p.prob.append(prob)
                    m = binary_metrics(truth, prob) if task == "permafrost" else multiclass_metrics(truth, prob)
                    folds.setdefault((scheme, task, model), []).append(m)
                preds[(scheme, task, model)] = p
    regions = {"zone": {i: ("continuous" if k < 25 else "sporadic") for k, i in enumerate(ids)},
               "mlra": {i: "229" for i in ids}}
    sizes = {s: [{"train": 20, "test": 20, "buffer": 0}] * 2 for s in ("random", "spatial-1km")}
    return Evaluation("test", ["random", "spatial-1km"], ["permafrost", "taxonomy"], 2, 5, "tiny", 3, preds, folds,
                      regions, sizes, 1.0, {"miso_s": 0.5},
                      label_counts={"permafrost": {"yes": 17, "no": 23}, "taxonomy": {"Gelisols": 40}})


def test_writers(tmp_path):
    ev = fake_evaluation()
    rows = summary_rows(ev, "permafrost")
    assert [(r["scheme"], r["model"]) for r in rows] == [(s, m) for s in ev.schemes for m in MODELS]
    assert all(r["folds"] == 2 and r["test_points"] == 40 for r in rows)
    write_outputs(ev, tmp_path)
    for name in ("table1_permafrost.csv", "table1_permafrost.md", "table2_taxonomy.csv", "table2_taxonomy.md",
                 "regions.csv", "regions.md", "predictions.csv", "metrics.json", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    csv_lines = (tmp_path / "table1_permafrost.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 6 and "accuracy_mean" in csv_lines[0]
    md = (tmp_path / "table2_taxonomy.md").read_text()
    # 3 model rows of the summary, 7 order rows of the per-class table
    assert md.count("| spatial-1km |") == 3 + 7 and "±" in md and "| Bal acc |" in md
    regions = (tmp_path / "regions.csv").read_text().splitlines()
    # 2 schemes x 2 tasks x (2 zones + 1 MLRA) x 3 models
    assert len(regions) == 1 + 2 * 2 * 3 * 3
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 2 * 2 * 3 * 40
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * 2 * 2 + 2 * 2 + 2
    assert "Table 1" in page and "Table 2" in page and "<script" not in page
    assert "<h2>Labelled points in the region</h2>" in page
    assert "<td>permafrost</td><td>yes</td><td>17</td>" in page
    assert "<td>taxonomy</td><td>Gelisols</td><td>40</td>" in page
    assert json.loads((tmp_path / "metrics.json").read_text())["label_counts"]["permafrost"] == {"yes": 17, "no": 23}


def test_per_class_rows_and_predictions_use_each_folds_miso_threshold(tmp_path):
    ev = fake_evaluation()
    pred = ev.predictions[("random", "permafrost", "MISO")]
    truth, prob, _ = pred.arrays()
    pred.threshold = [0.0, 1.01]  # fold 1: everything permafrost, fold 2: nothing
    rows = {r["class"]: r for r in per_class_rows(ev, "permafrost") if r["scheme"] == "random"}
    pf = truth == 1
    assert rows["permafrost"]["n"] == int(pf.sum())
    assert rows["permafrost"]["MISO_recall"] == pytest.approx(pf[:20].sum() / pf.sum())
    rf = ev.predictions[("random", "permafrost", "RF-11")]
    rf_truth, rf_prob, _ = rf.arrays()
    assert rows["permafrost"]["RF-11_recall"] == pytest.approx(np.mean(rf_prob[rf_truth == 1] >= 0.5))
    write_outputs(ev, tmp_path)
    with (tmp_path / "predictions.csv").open() as f:
        lines = [r for r in csv.DictReader(f) if r["model"] == "MISO" and r["scheme"] == "random"]
    assert {(r["fold"], r["threshold"]) for r in lines if r["task"] == "permafrost"} == {("1", "0.0000"),
                                                                                        ("2", "1.0100")}
    assert all(r["threshold"] == "" for r in lines if r["task"] == "taxonomy")
    md = (tmp_path / "table1_permafrost.md").read_text()
    assert "| random | permafrost |" in md and "presence recall" in md


def test_area_of_applicability_table_counts_and_accuracies_inside_and_outside(tmp_path):
    from miso_mapper.evaluate.applicability import aoa_rows

    ev = fake_evaluation()
    for scheme in ev.schemes:
        for task in ev.tasks:
            pred = ev.predictions[(scheme, task, "MISO")]
            for f in range(2):
                # permafrost, random: DI 0..1.9 with threshold 1.0 -> 11 inside, 9 outside per fold
                di = np.linspace(0, 1.9, 20) if (scheme, task) == ("random", "permafrost") else np.zeros(20)
                pred.aoa_di.append(di)
                pred.aoa_threshold.append(1.0 if f == 0 else 1.5)
    rows = {(r["scheme"], r["task"]): r for r in aoa_rows(ev)}
    r = rows[("random", "permafrost")]
    pred = ev.predictions[("random", "permafrost", "MISO")]
    truth, prob, _ = pred.arrays()
    ok = (prob >= 0.5).astype(int) == truth
    inside = np.concatenate([np.linspace(0, 1.9, 20) <= 1.0, np.linspace(0, 1.9, 20) <= 1.5])
    assert (r["n_inside"], r["n_outside"]) == (int(inside.sum()), int((~inside).sum())) == (27, 13)
    assert r["accuracy_inside"] == pytest.approx(ok[inside].mean())
    assert r["accuracy_outside"] == pytest.approx(ok[~inside].mean())
    assert r["threshold_mean"] == pytest.approx(1.25) and r["note"] == ""
    tax = rows[("spatial-1km", "taxonomy")]
    assert tax["n_outside"] == 0 and np.isnan(tax["accuracy_outside"]) and tax["note"] == "every test point is inside"
    write_outputs(ev, tmp_path)
    md = (tmp_path / "area_of_applicability.md").read_text()
    assert "| random | permafrost | 27 |" in md and "every test point is inside" in md
    assert json.loads((tmp_path / "metrics.json").read_text())["area_of_applicability"][0]["n_inside"] == 27
    assert "<h2>Area of applicability</h2>" in (tmp_path / "report.html").read_text()
    with (tmp_path / "predictions.csv").open() as f:
        di = [row["aoa_di"] for row in csv.DictReader(f) if row["model"] == "MISO" and row["scheme"] == "random"
              and row["task"] == "permafrost"]
    assert di[1] == f"{1.9 / 19:.4f}"


def test_no_area_of_applicability_rows_without_miso_di():
    from miso_mapper.evaluate.applicability import aoa_rows

    assert aoa_rows(fake_evaluation()) == []


def with_calibration(ev):
    """``ev`` with MISO's probabilities before calibration (over-confident: T = 2.5) and its fold figures."""
    from miso_mapper.evaluate.uncertainty import uncertainty_metrics
    from miso_mapper.model.card import ConformalRecord

    for (scheme, task, model), pred in ev.predictions.items():
        if model != "MISO":
            continue
        folds = ev.fold_metrics[(scheme, task, model)]
        for f, prob in enumerate(pred.prob):
            logit = np.log(prob / (1 - prob)) if task == "permafrost" else np.log(prob)
            raw = 1 / (1 + np.exp(-2.5 * logit)) if task == "permafrost" else np.exp(2.5 * logit)
            raw = raw if task == "permafrost" else raw / raw.sum(axis=1, keepdims=True)
            pred.raw_prob.append(raw)
            truth = np.asarray(pred.truth[20 * f:20 * (f + 1)])
            folds[f] |= uncertainty_metrics(truth, prob, raw, task, 0.5, 2.5,
                                            ConformalRecord(coverage=0.9, qhat=0.9 - 0.05 * f, n=30))
    return ev


def test_calibration_and_uncertainty_tables_and_reliability_diagrams(tmp_path):
    from miso_mapper.evaluate.uncertainty import expected_calibration_error
    from miso_mapper.evaluate.uncertainty_report import uncertainty_rows

    plain = fake_evaluation()
    write_outputs(plain, tmp_path / "plain")  # an evaluation without the figures still writes its report
    assert "no MISO calibration figures" in (tmp_path / "plain" / "table1_permafrost.md").read_text()
    ev = with_calibration(fake_evaluation())
    pred = ev.predictions[("random", "taxonomy", "MISO")]
    truth = np.asarray(pred.truth)
    rows = {r["scheme"]: r for r in uncertainty_rows(ev, "taxonomy")}
    eces = [expected_calibration_error(truth[20 * f:20 * (f + 1)], pred.raw_prob[f], "taxonomy") for f in (0, 1)]
    assert rows["random"]["ece_before_mean"] == pytest.approx(np.mean(eces))
    assert rows["random"]["temperature_mean"] == 2.5 and rows["random"]["folds"] == 2
    sets = [(pred.prob[f] >= 0.1 + 0.05 * f - 1e-6)[np.arange(20), truth[20 * f:20 * (f + 1)]].mean() for f in (0, 1)]
    assert rows["random"]["conformal_coverage_mean"] == pytest.approx(np.mean(sets))
    assert "conformal_coverage_mean" not in uncertainty_rows(ev, "permafrost")[0]
    write_outputs(ev, tmp_path)
    md = (tmp_path / "table2_taxonomy.md").read_text()
    assert "Calibration and uncertainty, MISO, soil order" in md and "| Set coverage |" in md
    assert md.count("| spatial-1km |") == 3 + 7 + 1
    saved = json.loads((tmp_path / "metrics.json").read_text())["uncertainty"]
    assert saved["permafrost"][0]["error_auroc_mean"] == pytest.approx(
        uncertainty_rows(ev, "permafrost")[0]["error_auroc_mean"])
    page = (tmp_path / "report.html").read_text()
    for task in ("permafrost", "taxonomy"):
        for scheme in ev.schemes:
            assert f'alt="reliability diagram, {task}, {scheme}"' in page
    assert "AUROC (uncertainty for errors)" in page
