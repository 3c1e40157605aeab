"""Labelled points: named label fields, their spellings, the per-class counts and the one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.checks import workflow_problems
from miso_mapper.config import PointsConfig, load_workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.points import describe_label_counts, label_counts, load_points, read_points

from .helpers import WORKFLOWS

GEL, INC = SOIL_ORDERS.index("Gelisols"), SOIL_ORDERS.index("Inceptisols")


def write_points(path: Path, rows: list[dict[str, Any]], x0: float = 261_000.0) -> Path:
    """A GeoJSON of points at EPSG:3338 (x0 + 100 i, 1,665,000) inside the demo region, ``rows`` their
    properties (``id`` added when absent)."""
    feats = [{"type": "Feature", "geometry": None,
              "properties": {"id": f"p{i}", **row, "x_3338": x0 + 100 * i, "y_3338": 1_665_000.0}}
             for i, row in enumerate(rows)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def field_points(tmp_path: Path) -> Path:
    """The new user's file: the permafrost label is called ``permafrost_1m``."""
    rows = [{"permafrost_1m": 1, "soil_order": "Gelisols"}, {"permafrost_1m": 1, "soil_order": "Gelisols"},
            {"permafrost_1m": 0, "soil_order": "Inceptisols"}, {"permafrost_1m": None, "soil_order": None},
            {"permafrost_1m": 0, "soil_order": "Gelisols"}]
    return write_points(tmp_path / "points.geojson", rows)


def workflow(tmp_path: Path, points: Path, **settings: Any) -> Any:
    return load_workflow(WORKFLOWS / "demo.yaml", {
        "output": {"directory": str(tmp_path / "out")}, "world": {"directory": str(tmp_path / "world")},
        "points": {"path": str(points), **settings}})


def test_a_differently_named_label_field_is_an_error_until_it_is_named(tmp_path):
    path = field_points(tmp_path)
    with pytest.raises(MisoError) as exc:
        read_points(path)
    assert str(exc.value) == (f"points file {path}: no point has property 'permafrost' (points.permafrost_field); "
                              "the points have: id, permafrost_1m, soil_order, x_3338, y_3338")
    points = read_points(path, PointsConfig(permafrost_field="permafrost_1m"))
    np.testing.assert_array_equal(points.permafrost, [1, 1, 0, np.nan, 0])
    np.testing.assert_array_equal(points.soil_order, [GEL, GEL, INC, -1, GEL])
    counts = label_counts(points)
    assert counts["permafrost"] == {"yes": 2, "no": 2}
    assert counts["taxonomy"] == {**dict.fromkeys(SOIL_ORDERS, 0), "Gelisols": 3, "Inceptisols": 1}
    assert describe_label_counts(counts) == ("permafrost: 4 labelled (2 yes / 2 no); "
                                             "soil order: 4 labelled (Gelisols 3, Inceptisols 1)")


def test_load_points_prints_the_counts_of_its_tasks(tmp_path):
    wf = workflow(tmp_path, field_points(tmp_path), permafrost_field="permafrost_1m")
    said: list[str] = []
    points = load_points(wf, ["permafrost", "taxonomy"], echo=said.append)
    assert len(points) == 5
    assert said == ["labels: permafrost: 4 labelled (2 yes / 2 no); soil order: 4 labelled (Gelisols 3, "
                    "Inceptisols 1)"]
    said.clear()
    load_points(wf, ["taxonomy"], echo=said.append)
    assert said == ["labels: soil order: 4 labelled (Gelisols 3, Inceptisols 1)"]


def test_permafrost_spellings_and_no_label_values(tmp_path):
    values = [1, 0, True, False, 1.0, 0.0, "1", "0", "yes", "No", " TRUE ", "false", None, "", "NA", "nan",
              float("nan"), "n/a"]
    path = write_points(tmp_path / "p.geojson", [{"permafrost": v} for v in values])
    got = read_points(path, tasks=["permafrost"]).permafrost
    want = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0] + [math.nan] * 6
    np.testing.assert_array_equal(got, want)
    # spellings of one's own: "Y"/"N", and -999 for no label
    path = write_points(tmp_path / "q.geojson", [{"permafrost": v} for v in ("Y", "n", -999, "yes")])
    cfg = PointsConfig(permafrost_true=["Y"], permafrost_false=["N"], no_label_values=["-999"])
    with pytest.raises(MisoError, match=r"1 value\(s\) of 'permafrost' .* not a permafrost label: 'yes' \(1\)"):
        read_points(path, cfg, tasks=["permafrost"])
    np.testing.assert_array_equal(read_points(path, cfg, tasks=()).permafrost, [1, 0, np.nan, np.nan])


def test_soil_orders_in_any_case_singular_and_mapped(tmp_path):
    names = ["gelisols", "GELISOL", " Inceptisol ", "Histosols", "Turbels", "turbels", "Aridisols", "NA"]
    path = write_points(tmp_path / "p.geojson", [{"soil_order": v} for v in names])
    cfg = PointsConfig(soil_order_names={"TURBELS": "gelisol", "Aridisols": None})
    assert cfg.soil_order_names == {"TURBELS": "Gelisols", "Aridisols": None}
    got = read_points(path, cfg, tasks=["taxonomy"]).soil_order
    np.testing.assert_array_equal(got, [GEL, GEL, INC, SOIL_ORDERS.index("Histosols"), GEL, GEL, -1, -1])


def test_unknown_class_names_are_listed_with_counts(tmp_path):
    names = ["Gelisols", "Turbels", "Turbels", "Aridisols", "Orthels"]
    path = write_points(tmp_path / "p.geojson", [{"soil_order": v, "permafrost": 1} for v in names])
    with pytest.raises(MisoError) as exc:
        read_points(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert (f"points file {path}: 4 value(s) of 'soil_order' (points.soil_order_field) are not a soil order: "
            "'Turbels' (2), 'Aridisols' (1), 'Orthels' (1); accepted: Andisols, Entisols, Gelisols") in msg
    assert "points.soil_order_names" in msg
    # not a task here: the file still reads, its unknown orders unlabelled
    points = read_points(path, tasks=["permafrost"])
    np.testing.assert_array_equal(points.soil_order, [GEL, -1, -1, -1, -1])


def test_a_mapping_to_no_soil_order_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="points.soil_order_names.*'Turbels' not a soil order"):
        workflow(tmp_path, tmp_path / "p.geojson", soil_order_names={"Orthels": "Turbels"})
    with pytest.raises(ConfigError, match="permafrost_true and no_label_values share 'na'"):
        workflow(tmp_path, tmp_path / "p.geojson", permafrost_true=["NA"])


def test_a_task_not_asked_for_may_lack_its_field(tmp_path):
    path = write_points(tmp_path / "p.geojson", [{"soil_order": "Gelisols"}, {"soil_order": "Mollisol"}])
    points = read_points(path, tasks=["taxonomy"])
    assert np.isnan(points.permafrost).all()
    np.testing.assert_array_equal(points.soil_order, [GEL, SOIL_ORDERS.index("Mollisols")])
    with pytest.raises(MisoError, match="no point has property 'permafrost'"):
        read_points(path, tasks=["permafrost", "taxonomy"])


def test_an_absent_id_field_names_the_setting(tmp_path):
    path = write_points(tmp_path / "p.geojson", [{"permafrost": 1, "soil_order": "Gelisols"}])
    assert read_points(path).ids.tolist() == ["p0"]
    with pytest.raises(MisoError, match=r"feature 0 has no 'site' \(points.id_field\) and no feature id; "
                                        "the points have: id, permafrost, soil_order, x_3338, y_3338"):
        read_points(path, PointsConfig(id_field="site"))


def test_no_label_of_a_task_left_in_the_region_is_an_error(tmp_path):
    # permafrost labels only on the two points east of the region (x >= 270,000)
    rows = [{"permafrost": None, "soil_order": "Gelisols"}] * 3 + [{"permafrost": 1, "soil_order": None}] * 2
    path = write_points(tmp_path / "p.geojson", rows, x0=269_750.0)
    wf = workflow(tmp_path, path)
    with pytest.raises(MisoError) as exc:
        load_points(wf, ["permafrost", "taxonomy"])
    assert str(exc.value) == (f"no point of {path} inside the region has a permafrost label (property "
                              "'permafrost', points.permafrost_field; 2 labelled in the whole file)")
    assert len(load_points(wf, ["taxonomy"])) == 3
    # validate: the tasks of train and evaluate
    problems = workflow_problems(wf)
    assert [p.field for p in problems] == ["points.path"] and "permafrost label" in problems[0].message
    wf = wf.model_copy(update={
        "train": wf.train.model_copy(update={"tasks": ["taxonomy"]}),
        "evaluate": wf.evaluate.model_copy(update={"tasks": ["taxonomy"]})})
    assert workflow_problems(wf) == []


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_refuse_a_misnamed_field_before_any_imagery(tmp_path, command):
    import yaml
    from typer.testing import CliRunner

    from miso_mapper.cli import app

    path = field_points(tmp_path)
    raw = workflow(tmp_path, path).model_dump(mode="json")
    raw["imagery"]["stac_url"] = "http://127.0.0.1:9/"  # nothing serves there: the points are refused first
    config = tmp_path / "wf.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, [command, str(config)])
    assert result.exit_code == 1, result.output
    assert "no point has property 'permafrost' (points.permafrost_field); the points have: id, permafrost_1m" in (
        " ".join(result.output.split()))
    assert "Traceback" not in result.output and not (tmp_path / "world").exists()
