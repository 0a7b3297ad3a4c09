"""The Unlearning page's audit charts, from the dicts cv_core.edits.report_audits returns."""
from app import charts


def _cka(orig, retr=None):
    part = {"original": orig} if retr is None else {"original": orig, "retrained": retr}
    return {"classes": [0], "blocks": ["stem", "layer1.0", "output"], "forget": part, "retain": part}


def test_cka_chart_has_a_curve_per_method_reference_and_image_set():
    fig = charts.cka_curves({"cv_weight_map": [_cka([1.0, 0.9, 0.5], [0.9, 0.8, 0.4])],
                             "retrain": [_cka([0.99, 0.95, 0.6])]})
    names = [(t.name, t.xaxis) for t in fig.data]
    assert names.count(("cv_weight_map vs original", "x")) == 1 and ("cv_weight_map vs retrained", "x2") in names
    assert len(fig.data) == 2 * 2 + 2  # weight map: 2 refs x 2 panels; retrain: 1 ref x 2 panels
    first = fig.data[0]
    assert list(first.x) == ["stem", "layer1.0", "output"] and list(first.y) == [1.0, 0.9, 0.5]
    assert [t.line.dash for t in fig.data[:2]] == ["solid", "dash"]


def test_relearning_chart_skips_methods_answered_by_construction():
    rel = {"steps": [0, 10, 50], "methods": {
        "retrain": [{"acc_f": [0.0, 0.2, 0.8]}, {"acc_f": [0.2, 0.4, 1.0]}],
        "cv_steer": {"by_construction": "encoder untouched"}}}
    fig = charts.relearning_curves(rel)
    assert [t.name for t in fig.data] == ["retrain"]
    assert [round(v, 6) for v in fig.data[0].y] == [10.0, 30.0, 90.0] and fig.data[0].line.dash == "dash"
