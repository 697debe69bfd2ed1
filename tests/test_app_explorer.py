"""The runs explorer's logic without a browser: filters, grouping, URL state, CSV export,
baseline diff and compare frames, and the linked selection of a whole Dashboard."""
import io
import math

import pandas as pd
import pytest

from workbench.app.compare import compare_frame, diff_vs_baseline
from workbench.app.export import export_csv, export_frame
from workbench.app.filters import (MISSING, apply_filters, filter_specs, sorted_labels,
                                   value_labels)
from workbench.app.grouping import group_columns, group_labels, group_summary
from workbench.app.urlstate import decode_query, encode_query
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore


def runs_frame():
    """Two methods x two settings x two seeds, plus a run without nblocks (dense)."""
    rows = []
    for method, nblocks, base in (("monarch", 4, 0.90), ("monarch", 8, 0.86), ("gmp", None, 0.88)):
        for seed in (0, 1):
            rows.append({"run_id": f"{method}{nblocks or ''}-s{seed}", "method": method,
                         "model": "mlp", "dataset": "mnist1d", "device": "cpu", "status": "ok",
                         "seed": seed, "param.nblocks": nblocks, "param.seed": seed,
                         "param.lr": 1e-3, "metric.accuracy": base + 0.02 * seed,
                         "cost.flops_per_sample": 1e6 / (nblocks or 1), "duration_s": 10.0 + seed})
    return pd.DataFrame(rows)


# ---- filters -----------------------------------------------------------------------------------
def test_value_labels_whole_floats_and_missing():
    labels = value_labels(pd.Series([4.0, 8.0, None, 0.5]))
    assert labels.tolist() == ["4", "8", MISSING, "0.5"]
    assert value_labels(pd.Series(["a", None])).tolist() == ["a", MISSING]
    assert sorted_labels(["16", "4", MISSING, "b", "a"]) == ["4", "16", "a", "b", MISSING]


def test_filter_specs_skip_constant_parameters_and_use_ranges_for_many_values():
    df = runs_frame()
    specs = {s.column: s for s in filter_specs(df)}
    assert "param.lr" not in specs  # the same for every run: filters nothing
    assert specs["param.nblocks"].options == ("4", "8", MISSING)
    assert specs["method"].options == ("gmp", "monarch") and specs["method"].kind == "choice"
    df["param.width"] = range(len(df) * 10, len(df) * 10 + len(df))
    many = pd.concat([df] * 10, ignore_index=True)
    many["param.width"] = range(len(many))
    spec = {s.column: s for s in filter_specs(many)}["param.width"]
    assert spec.kind == "range" and spec.bounds == (0.0, len(many) - 1.0)


def test_apply_filters_choices_ranges_and_unknown_columns():
    df = runs_frame()
    assert set(apply_filters(df, {"method": ["gmp"]})["run_id"]) == {"gmp-s0", "gmp-s1"}
    assert len(apply_filters(df, {"param.nblocks": ["8", MISSING]})) == 4
    assert len(apply_filters(df, {"param.nblocks": (5.0, 10.0)})) == 2
    assert len(apply_filters(df, {"param.absent": ["x"], "method": []})) == len(df)


# ---- grouping ----------------------------------------------------------------------------------
def test_group_summary_mean_std_min_max_over_seeds():
    df = runs_frame()
    summary = group_summary(df, "setting", ["metric.accuracy", "cost.flops_per_sample"])
    assert group_columns(df, "setting") == ["method", "model", "dataset", "param.nblocks"]
    assert summary["runs"].tolist() == [2, 2, 2]  # the seed does not split a setting
    row = summary.set_index("group").loc["monarch · mlp · mnist1d · nblocks=4"]
    assert row["metric.accuracy mean"] == pytest.approx(0.91)
    assert row["metric.accuracy std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert (row["metric.accuracy min"], row["metric.accuracy max"]) == (0.90, 0.92)
    assert sorted(row["run_ids"]) == ["monarch4-s0", "monarch4-s1"]

    by_method = group_summary(df, "method", ["metric.accuracy"]).set_index("group")
    assert by_method.loc["monarch", "runs"] == 4
    assert by_method.loc["gmp", "metric.accuracy max"] == pytest.approx(0.90)
    assert group_labels(df, "param.nblocks").iloc[0] == "monarch · nblocks=4"
    assert group_summary(df, "", ["metric.accuracy"]).empty


# ---- URL state ---------------------------------------------------------------------------------
QUALITY, COST = ["metric.accuracy", "metric.loss"], ["cost.flops_per_sample", "cost.latency_ms"]


def test_url_state_round_trip():
    state = {"quality": "metric.loss", "cost": "cost.latency_ms", "log_x": True, "log_y": False,
             "filters": {"method": ["monarch", "dense"], "param.tag": ["a,b"],
                         "param.lr": (0.0001, 0.01)},
             "group_by": "param.nblocks", "selected": ["ab12", "cd34"]}
    query = encode_query(state)
    assert query.startswith("?x=latency_ms&y=loss&logx=1&") and "runs=ab12,cd34" in query
    assert "param.tag=a%2Cb" in query and "param.lr=0.0001..0.01" in query
    decoded, problems = decode_query(query, QUALITY, COST)
    assert problems == []
    assert decoded == {k: v for k, v in state.items() if k != "log_y"}
    assert encode_query({**state, "log_y": False}) == query


def test_url_defaults_are_left_out_and_bad_names_explained():
    defaults = {"quality": "metric.accuracy", "cost": "cost.flops_per_sample"}
    assert encode_query({**defaults, "filters": {"method": []}}, defaults) == ""
    state, problems = decode_query("?x=cost.params&y=accuracy&param.nope=1&colour=red",
                                   QUALITY, COST, filterable=["method"])
    assert state == {"quality": "metric.accuracy"}
    assert len(problems) == 3 and any("x=cost.params" in p for p in problems)


# ---- export, diff, compare ---------------------------------------------------------------------
def test_export_frame_and_csv_hold_exactly_the_selected_runs():
    df = runs_frame()
    df["param.empty"] = None
    frame = export_frame(df, ["gmp-s1", "monarch4-s0"])
    assert frame["run_id"].tolist() == ["monarch4-s0", "gmp-s1"]  # the frame's order
    assert "param.empty" not in frame and frame.columns[0] == "run_id"
    assert "param.nblocks" in frame
    back = pd.read_csv(export_csv(df, ["gmp-s1", "monarch4-s0"]))
    assert back["run_id"].tolist() == ["monarch4-s0", "gmp-s1"]
    assert len(export_frame(df, [])) == len(df)  # nothing selected: everything given


def test_diff_vs_baseline_lists_differing_parameters_and_changes():
    df = runs_frame()
    diff = diff_vs_baseline(df, "monarch8-s1", "monarch4-s0").set_index(["section", "name"])
    params = diff.loc["parameter"].index.tolist()
    assert params == ["nblocks", "seed"]  # lr is the same: not listed
    assert diff.loc[("metric", "accuracy"), "change"] == pytest.approx(0.88 / 0.90 - 1)
    assert diff.loc[("run", "seed"), "run"] == 1
    with pytest.raises(KeyError, match="nope"):
        diff_vs_baseline(df, "nope", "monarch4-s0")


def test_compare_frame_side_by_side():
    df = runs_frame()
    frame = compare_frame(df, ["monarch4-s0", "gmp-s0", "unknown"])
    assert list(frame.columns) == ["monarch4-s0", "gmp-s0"]
    assert ("run", "method") in frame.index and ("parameter", "lr") not in frame.index
    assert frame.loc[("metric", "accuracy")].tolist() == [0.90, 0.88]
    assert ("parameter", "lr") in compare_frame(df, ["monarch4-s0", "gmp-s0"], False).index


# ---- a whole dashboard, linked ------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    for row in runs_frame().to_dict("records"):
        params = {"lr": row["param.lr"], "seed": row["seed"]}
        if not pd.isna(row["param.nblocks"]):
            params["nblocks"] = int(row["param.nblocks"])
        store.add(RunRecord(run_id=row["run_id"], method=row["method"], model="mlp",
                            dataset="mnist1d", device="cpu", seed=row["seed"],
                            duration_s=row["duration_s"],
                            parameters=params, metrics={"accuracy": row["metric.accuracy"]},
                            cost={"flops_per_sample": row["cost.flops_per_sample"]}))
    return store


def test_selection_is_linked_across_plot_table_and_parallel_coordinates(store):
    from workbench.app.dashboard import Dashboard

    dash = Dashboard(store=store.url)
    e = dash.explorer
    box = {"selector": {"type": "box"}, "points": [{"customdata": ["gmp-s0"]},
                                                   {"customdata": ["monarch8-s1"]}]}
    dash.plot.pane.selected_data = box
    assert e.selected == ["monarch8-s1", "gmp-s0"]  # in the frame's order
    table = dash.table.widget
    assert sorted(table.value["run_id"].iloc[table.selection]) == ["gmp-s0", "monarch8-s1"]
    lines = dash.parallel.pane.object.data[0].line.color
    assert sorted(lines) == [0] * 4 + [1] * 2
    assert "2 selected" in dash.plot.pane.object.layout.title.text
    assert "2 selected" in dash.download.label

    table.selection = [0]  # ticking rows in the table replaces the selection
    assert e.selected == [table.value["run_id"].iloc[0]]
    # Brushing the quality axis of the parallel coordinates selects the runs inside.
    axis = dash.parallel._columns.index("metric.accuracy")
    dash.parallel.pane.restyle_data = [{f"dimensions[{axis}].constraintrange": [[0.895, 0.93]]},
                                       [0]]
    assert e.selected == ["monarch4-s0", "monarch4-s1", "gmp-s1"]
    assert dash.parallel.pane.object.data[0].dimensions[axis].constraintrange == ((0.895, 0.93),)
    # Filtering drops filtered-out runs from the selection; the CSV holds what is selected.
    e.set_filter("method", ["monarch"])
    assert e.selected == ["monarch4-s0", "monarch4-s1"]
    csv = pd.read_csv(io.StringIO(dash._export().read()))
    assert csv["run_id"].tolist() == ["monarch4-s0", "monarch4-s1"]


def test_grouped_view_compare_and_baseline(store):
    from workbench.app.dashboard import Dashboard

    dash = Dashboard(store=store.url)
    e = dash.explorer
    e.group_by = "setting"
    fig = dash.plot.pane.object
    assert sum(len(t.x) for t in fig.data if t.mode == "markers") == 3
    assert len(dash.groups.widget.value) == 3
    dash.plot.pane.click_data = {"points": [{"customdata": [e.groups["group"].iloc[1]]}]}
    assert len(e.selected) == 2 and dash.tabs.active == 0  # a group point selects its runs
    html = dash.compare.view(e.selected, True)[1].object
    assert all(r in html for r in e.selected)

    dash.show_run("monarch8-s1")
    assert dash.baseline.baseline == "gmp-s1"  # newest first (no dense run here)
    dash.baseline.baseline = "monarch4-s1"
    text = dash.baseline.view(dash.baseline.run_id, dash.baseline.baseline)[0].object
    assert "nblocks" in text and "lr" not in text


def test_deep_link_sets_the_view_and_follows_changes(store):
    from panel.io.location import Location

    from workbench.app.dashboard import Dashboard

    location = Location(search="?x=duration_s&logy=1&method=monarch,dense&param.nblocks=8"
                               "&runs=monarch8-s0&colour=red")
    dash = Dashboard(store=store.url, location=location)
    e = dash.explorer
    assert (e.cost, e.log_y, e.selected) == ("duration_s", True, ["monarch8-s0"])
    assert e.filters == {"method": ["monarch"], "param.nblocks": ["8"]}
    assert len(e.filtered) == 2 and e.url_problems == [
        "colour: not a dashboard setting (ignored)", "method: no runs have dense"]
    widgets = dash.filters._widgets
    assert widgets["method"].value == ["monarch"] and widgets["param.nblocks"].value == ["8"]
    assert location.search == ("?x=duration_s&logy=1&method=monarch&param.nblocks=8"
                               "&runs=monarch8-s0")
    widgets["method"].value = []
    e.cost = "cost.flops_per_sample"
    assert location.search == "?logy=1&param.nblocks=8&runs=monarch8-s0"


def test_table_can_show_only_the_selected_runs(store):
    from workbench.app.dashboard import Dashboard

    dash = Dashboard(store=store.url)
    dash.explorer.select(["gmp-s0", "monarch4-s1"])
    dash.table.only_selected = True
    assert sorted(dash.table.widget.value["run_id"]) == ["gmp-s0", "monarch4-s1"]
    assert len(dash.table.widget.selection) == 2
    dash.explorer.select([])  # nothing selected: every filtered run again
    assert len(dash.table.widget.value) == 6


def test_table_keeps_a_parameter_named_like_a_run_field_apart():
    from workbench.app.views import table_frame

    df = runs_frame().assign(**{"param.model": ["a", "b"] * 3, "param.device": "cuda"})
    table = table_frame(df, "metric.accuracy", "cost.flops_per_sample")
    assert table.columns.is_unique
    assert {"model", "param.model", "nblocks", "accuracy"} <= set(table.columns)
