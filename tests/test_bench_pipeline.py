"""The prediction pipeline's bench case runs (at toy sizes here; `fastdet bench --full` runs
64 DICOMs of 1,024 x 1,024) and reports predict det against its floor, ms per image."""

from fastdet.bench.pipeline import FLOOR, predict_case
from fastdet.bench.runner import run_case


def test_predict_case_times_predict_det_against_its_forward_passes():
    case = predict_case(images=3, side=64, min_size=64, batch=2, workers=0)
    assert not case.quick and case.floor == FLOOR
    res = run_case(case, "cpu", min_runs=1, budget_s=0.0)
    assert set(res["impls"]) == {"fastdet", FLOOR}
    assert res["fastdet_over_floor"] > 0 and res["impls"]["fastdet"]["runs"] >= 1
