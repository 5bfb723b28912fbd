"""weighted_boxes_fusion against ensemble-boxes (the peer, compared after a canonical sort: its
argsort is unstable, so its order of tied scores is unspecified) and against the slow reference
(exactly, order included)."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdet import _C, ops
from fastdet.ops import _reference as reference

CONF_TYPES = ["avg", "max", "box_and_model_avg", "absent_model_aware_avg"]


@pytest.fixture(scope="module")
def eb():
    return pytest.importorskip("ensemble_boxes")


def peer(eb, *args, **kw):
    """ensemble-boxes, its warnings (clipping, swapping, zero-area boxes) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eb.weighted_boxes_fusion(*args, **kw)


def ensemble(rng, models, n, labels=3, objects=12, spill=0.05):
    """`models` models' detections of the same `objects` objects: jittered boxes (some past the
    [0, 1] border by up to `spill`, some inverted), random scores and labels; model sizes vary
    from 0 to n."""
    centres = rng.uniform(-spill, 1 + spill, (objects, 2))
    sizes = rng.uniform(0.02, 0.35, (objects, 2))
    obj_label = rng.integers(0, labels, objects)
    bl, sl, ll = [], [], []
    for _ in range(models):
        k = int(rng.integers(0, n + 1))
        o = rng.integers(0, objects, k)
        c = centres[o] + rng.normal(0, 0.15, (k, 2)) * sizes[o]
        s = sizes[o] * rng.uniform(0.8, 1.25, (k, 2))
        b = np.concatenate([c - s / 2, c + s / 2], 1)
        flip = rng.random(k) < 0.05
        b[flip] = b[flip][:, [2, 3, 0, 1]]
        lab = np.where(rng.random(k) < 0.9, obj_label[o], rng.integers(0, labels, k))
        bl.append(b)
        sl.append(rng.uniform(0, 1, k))
        ll.append(lab.astype(np.float64))
    return bl, sl, ll


def canonical(boxes, scores, labels):
    """Rows sorted by (score rounded to 1e-9, label, box): an order both sides share."""
    b, s, lab = (np.asarray(x, np.float64) for x in (boxes, scores, labels))
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], lab, -np.round(s, 9)))
    return b[order], s[order], lab[order]


def assert_same_as_peer(got, want, atol=1e-6):
    assert len(got[0]) == len(want[0])
    for g, w in zip(canonical(*got), canonical(*want)):
        np.testing.assert_allclose(g, w, rtol=0, atol=atol)


def assert_same(got, want):
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("allows_overflow", [False, True])
def test_matches_ensemble_boxes(conf_type, allows_overflow, rng, eb):
    fused_somewhere = False
    for trial in range(12):
        m = int(rng.integers(1, 6))
        bl, sl, ll = ensemble(rng, m, 60)
        weights = list(rng.uniform(0.5, 3.0, m)) if trial % 2 else None
        iou_thr = float(rng.choice([0.0, 0.2, 0.4, 0.55, 0.7, 0.9]))
        skip = float(rng.choice([0.0, 0.1, 0.3]))
        kw = dict(
            weights=weights,
            iou_thr=iou_thr,
            skip_box_thr=skip,
            conf_type=conf_type,
            allows_overflow=allows_overflow,
        )
        got = ops.weighted_boxes_fusion(bl, sl, ll, **kw)
        assert_same_as_peer(got, peer(eb, bl, sl, ll, **kw))
        kept = sum(int((s >= skip).sum()) for s in sl)
        fused_somewhere |= 0 < len(got[0]) < kept
        assert (np.diff(got[1]) <= 0).all()
    assert fused_somewhere  # clusters of several boxes formed


def test_matches_ensemble_boxes_on_many_boxes(rng, eb):
    bl, sl, ll = ensemble(rng, 5, 400, labels=4, objects=60)
    got = ops.weighted_boxes_fusion(bl, sl, ll, weights=[1, 2, 1, 3, 1])
    assert_same_as_peer(got, peer(eb, bl, sl, ll, weights=[1, 2, 1, 3, 1]))


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_matches_reference_exactly(conf_type, rng):
    for trial in range(6):
        m = int(rng.integers(1, 7))
        bl, sl, ll = ensemble(rng, m, 50, labels=int(rng.integers(1, 5)))
        weights = rng.uniform(0.2, 4.0, m) if trial % 2 else None
        args = (weights, float(rng.uniform(0, 1)), 0.05, conf_type, bool(trial % 3 == 0))
        assert_same(
            ops.weighted_boxes_fusion(bl, sl, ll, *args),
            reference.weighted_boxes_fusion(bl, sl, ll, *args),
        )


def test_matches_reference_with_tied_scores_and_many_models(rng):
    # Scores on a coarse grid tie across models; 12 models with equal weights tie in score * w.
    m = 12
    bl, sl, ll = ensemble(rng, m, 30, labels=2, objects=8)
    sl = [np.round(s * 4) / 4 for s in sl]
    for conf_type in CONF_TYPES:
        args = (None, 0.5, 0.0, conf_type, False)
        assert_same(
            ops.weighted_boxes_fusion(bl, sl, ll, *args),
            reference.weighted_boxes_fusion(bl, sl, ll, *args),
        )


def test_iou_exactly_at_the_threshold_does_not_join(eb):
    a = [0.0, 0.0, 0.5, 1.0]
    b = [0.125, 0.0, 0.5, 1.0]  # IoU(a, b) = 0.375 / 0.5 = 0.75 exactly
    args = ([[a], [b]], [[0.9], [0.8]], [[0], [0]])
    for thr, count in [(0.75, 2), (np.nextafter(0.75, 0), 1)]:
        got = ops.weighted_boxes_fusion(*args, iou_thr=thr)
        assert len(got[0]) == count
        assert_same_as_peer(got, peer(eb, *args, iou_thr=thr))


def test_fused_box_and_scores_by_hand():
    # One label, two models: boxes of model 0 (score 0.8) and model 1 (score 0.4) fuse.
    boxes = [[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.1, 0.6, 0.5]]]
    scores, labels = [[0.8], [0.4]], [[3], [3]]
    b, s, lab = ops.weighted_boxes_fusion(boxes, scores, labels, weights=[1, 2], iou_thr=0.5)
    # weighted scores 0.8 and 0.8: the box is the plain mean, float32-rounded
    want = np.float32(np.array([0.15, 0.1, 0.55, 0.5]))
    np.testing.assert_allclose(b, [want], atol=1e-7)
    assert lab.tolist() == [3] and lab.dtype == np.int64
    # avg: mean weighted score 0.8 * min(2 boxes, 2 models) / sum of weights 3
    np.testing.assert_allclose(s, [float(np.float32(0.8)) * 2 / 3], rtol=1e-12)
    _, s_max, _ = ops.weighted_boxes_fusion(
        boxes, scores, labels, weights=[1, 2], iou_thr=0.5, conf_type="max"
    )
    np.testing.assert_allclose(s_max, [float(np.float32(0.8)) / 2], rtol=1e-12)


def test_single_model_fuses_its_own_boxes(rng, eb):
    bl, sl, ll = ensemble(rng, 1, 80)
    while len(bl[0]) < 40:  # a handful of boxes may all lie apart: nothing to fuse
        bl, sl, ll = ensemble(rng, 1, 80)
    got = ops.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.3)
    assert_same_as_peer(got, peer(eb, bl, sl, ll, iou_thr=0.3))
    assert len(got[0]) < len(bl[0])


def test_empty_inputs(eb):
    for got in [
        ops.weighted_boxes_fusion([], [], []),
        ops.weighted_boxes_fusion([[]], [[]], [[]]),
        ops.weighted_boxes_fusion([np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0)]),
        ops.weighted_boxes_fusion([[[0.1, 0.1, 0.2, 0.2]]], [[0.1]], [[0]], skip_box_thr=0.5),
    ]:
        b, s, lab = got
        assert b.shape == (0, 4) and s.shape == (0,) and lab.shape == (0,)
        assert b.dtype == s.dtype == np.float64 and lab.dtype == np.int64
    t = ops.weighted_boxes_fusion([torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0)])
    assert t[0].shape == (0, 4) and t[0].dtype == torch.float32 and t[2].dtype == torch.int64
    assert len(peer(eb, [[]], [[]], [[]])[0]) == 0


def test_a_model_without_boxes(rng, eb):
    bl, sl, ll = ensemble(rng, 3, 40)
    bl.insert(1, np.zeros((0, 4)))
    sl.insert(1, np.zeros(0))
    ll.insert(1, np.zeros(0))
    for conf_type in CONF_TYPES:
        got = ops.weighted_boxes_fusion(bl, sl, ll, weights=[1, 3, 2, 1], conf_type=conf_type)
        want = peer(eb, bl, sl, ll, weights=[1, 3, 2, 1], conf_type=conf_type)
        assert_same_as_peer(got, want)


def test_all_boxes_skipped(rng):
    bl, sl, ll = ensemble(rng, 3, 20)
    b, s, lab = ops.weighted_boxes_fusion(bl, sl, ll, skip_box_thr=1.5)
    assert b.shape == (0, 4) and s.shape == (0,) and lab.shape == (0,)


def test_clipping_swapping_and_zero_area_boxes(eb):
    boxes = [
        [[-0.2, 0.1, 0.4, 1.3], [0.6, 0.5, 0.2, 0.1], [0.3, 0.3, 0.3, 0.6], [1.2, 0.1, 1.5, 0.4]],
        [[0.0, 0.1, 0.45, 1.0], [0.55, 0.45, 0.15, 0.1], [0.7, 0.7, 0.9, 0.9], [0.5, -0.2, 0.6, 0]],
    ]
    scores = [[0.9, 0.8, 0.7, 0.6], [0.85, 0.75, 0.65, 0.55]]
    labels = [[1, 1, 1, 1], [1, 1, 1, 1]]
    got = ops.weighted_boxes_fusion(boxes, scores, labels)
    assert_same_as_peer(got, peer(eb, boxes, scores, labels))
    assert len(got[0]) == 3  # two fused pairs and one lone box; three zero-area boxes dropped
    assert (got[0] >= 0).all() and (got[0] <= 1).all()


def test_skip_threshold_compares_in_the_scores_dtype(eb):
    # float32(0.7) < 0.7 in float64, but not in float32, where numpy (and ensemble-boxes) compare
    box = [[0.1, 0.1, 0.4, 0.4]]
    for dtype, count in [(np.float32, 1), (np.float64, 0)]:
        s = [np.array([np.float32(0.7)], dtype)]
        got = ops.weighted_boxes_fusion([np.array(box)], s, [np.array([0])], skip_box_thr=0.7)
        assert len(got[0]) == count
        assert_same_as_peer(got, peer(eb, [np.array(box)], s, [np.array([0])], skip_box_thr=0.7))


def test_identical_boxes_tied_in_score(eb):
    box = [0.2, 0.2, 0.6, 0.7]
    boxes, scores, labels = [[box]] * 3, [[0.5]] * 3, [[2]] * 3
    got = ops.weighted_boxes_fusion(boxes, scores, labels, conf_type="box_and_model_avg")
    assert_same_as_peer(got, peer(eb, boxes, scores, labels, conf_type="box_and_model_avg"))
    assert len(got[0]) == 1


def test_zero_scores_fuse_to_the_plain_mean():
    # ensemble-boxes divides by the summed score here (NaN); fastdet takes the unweighted mean.
    boxes = [[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.1, 0.6, 0.5]]]
    b, s, _ = ops.weighted_boxes_fusion(boxes, [[0.0], [0.0]], [[0], [0]], iou_thr=0.5)
    np.testing.assert_allclose(b, np.float32([[0.15, 0.1, 0.55, 0.5]]), atol=1e-7)
    assert s.tolist() == [0.0]
    assert_same(
        (b, s, _),
        reference.weighted_boxes_fusion(boxes, [[0.0], [0.0]], [[0], [0]], None, 0.5),
    )


def test_labels_keep_clusters_apart_and_large_labels_are_exact():
    box = [0.2, 0.2, 0.6, 0.7]
    big = 2**40 + 1  # not a float32 (ensemble-boxes would round a fused cluster's label)
    _, _, lab = ops.weighted_boxes_fusion(
        [[box, box], [box]], [[0.9, 0.8], [0.7]], [[big, 5], [big]]
    )
    assert sorted(lab.tolist()) == [5, big]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_input_kinds_and_output_kinds(dtype, rng):
    bl, sl, ll = ensemble(rng, 3, 40)
    want = ops.weighted_boxes_fusion(bl, sl, ll)
    assert all(isinstance(x, np.ndarray) for x in want)
    assert want[0].dtype == want[1].dtype == np.float64 and want[2].dtype == np.int64
    lists = ops.weighted_boxes_fusion(
        [b.tolist() for b in bl], [s.tolist() for s in sl], [lab.astype(int).tolist() for lab in ll]
    )
    assert_same(lists, want)
    tb = [torch.from_numpy(b).to(dtype) for b in bl]
    ts = [torch.from_numpy(s).to(dtype) for s in sl]
    tl = [torch.from_numpy(lab).long() for lab in ll]
    got = ops.weighted_boxes_fusion(tb, ts, tl)
    assert all(isinstance(x, torch.Tensor) for x in got)
    assert got[0].dtype == got[1].dtype == dtype and got[2].dtype == torch.int64
    # the same computation on the same (float32-rounded) values as numpy input
    np_in = ops.weighted_boxes_fusion(
        [b.double().numpy() for b in tb], [s.double().numpy() for s in ts], ll
    )
    for g, w in zip(got, np_in):
        np.testing.assert_array_equal(g.numpy(), w.astype(g.numpy().dtype))


def test_results_do_not_depend_on_the_thread_count(rng):
    bl, sl, ll = ensemble(rng, 5, 200, labels=8, objects=40)
    before = _C.cpu.max_threads()
    try:
        _C.cpu.set_num_threads(1)
        one = ops.weighted_boxes_fusion(bl, sl, ll)
        _C.cpu.set_num_threads(2)
        two = ops.weighted_boxes_fusion(bl, sl, ll)
    finally:
        _C.cpu.set_num_threads(before)
    assert_same(one, two)


def _box():
    return [[0.1, 0.1, 0.3, 0.3]]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(boxes_list=[_box(), _box()]), ValueError, "one entry per model"),
        (dict(boxes_list=[[[0.1, 0.1, 0.3]]]), ValueError, r"boxes_list\[0\] must have shape"),
        (dict(scores_list=[[0.5, 0.4]]), ValueError, "same length"),
        (dict(boxes_list=[[[0.1, np.nan, 0.3, 0.3]]]), ValueError, r"boxes_list\[0\].*NaN"),
        (dict(scores_list=[[np.inf]]), ValueError, r"scores_list\[0\].*NaN or inf"),
        (dict(labels_list=[[1.5]]), ValueError, r"labels_list\[0\] must hold integers"),
        (dict(boxes_list=[[[True, False, True, True]]]), TypeError, "real numbers"),
        (dict(weights=[1, 2]), ValueError, r"one entry per model \(1\), got 2"),
        (dict(weights=[0.0]), ValueError, "weights must be finite and > 0"),
        (dict(weights=[np.nan]), ValueError, "weights must be finite and > 0"),
        (dict(conf_type="mean"), ValueError, "conf_type must be one of"),
        (dict(iou_thr=1.5), ValueError, r"iou_thr must be in \[0, 1\]"),
        (dict(iou_thr=float("nan")), ValueError, "iou_thr must be a number"),
        (dict(skip_box_thr="0.1"), TypeError, "skip_box_thr must be a real number"),
        (dict(allows_overflow=1), TypeError, "allows_overflow must be True or False"),
        (dict(boxes_list="boxes"), TypeError, "boxes_list must be a list"),
        (dict(boxes_list=[torch.tensor(_box())]), TypeError, "pass one kind"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    args = dict(boxes_list=[_box()], scores_list=[[0.5]], labels_list=[[1]])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.weighted_boxes_fusion(**args)


def _flat(rng, n=120, m=3):
    bl, sl, ll = ensemble(rng, m, n)
    counts = [len(b) for b in bl]
    return (
        torch.from_numpy(np.concatenate(bl)),
        torch.from_numpy(np.concatenate(sl)),
        torch.from_numpy(np.concatenate(ll)).long(),
        torch.repeat_interleave(torch.arange(m), torch.tensor(counts)),
        torch.from_numpy(np.concatenate(sl) < 0.05),
        torch.ones(m, dtype=torch.float64),
    )


def test_custom_op_passes_opcheck_and_compiles(rng):
    args = _flat(rng)
    op = torch.ops.fastdet.weighted_boxes_fusion
    for extra in [(0.55, 0, False), (0.3, 2, True)]:
        torch.library.opcheck(op, args + extra)
    torch.library.opcheck(op, tuple(a[:0] for a in args[:5]) + (args[5], 0.55, 0, False))

    def f(*a):
        boxes, scores, labels = op(*a, 0.55, 3, False)
        return boxes * 2, scores, labels

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(*args), f(*args)):
        assert torch.equal(got, want)


def test_custom_op_refuses_bad_model_indices_and_conf_types(rng):
    b, s, lab, models, skip, w = _flat(rng)
    op = torch.ops.fastdet.weighted_boxes_fusion
    with pytest.raises(ValueError, match="index argument is out of range"):
        op(b, s, lab, models + 5, skip, w, 0.55, 0, False)
    with pytest.raises(ValueError, match="conf_type must be in"):
        op(b, s, lab, models, skip, w, 0.55, 9, False)
    with pytest.raises(ValueError, match="scores must be"):
        op(b, s.float(), lab, models, skip, w, 0.55, 0, False)


coord = st.integers(0, 10).map(lambda v: v / 8)
model = st.lists(
    st.tuples(
        coord, coord, coord, coord, st.integers(0, 4).map(lambda v: v / 4), st.integers(0, 1)
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(model, max_size=4),
    st.sampled_from(CONF_TYPES),
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    st.booleans(),
)
def test_properties_on_grid_coordinates(models, conf_type, iou_thr, allows_overflow):
    # Coordinates on a 1/8 grid (past 1 too), scores in quarters: exact IoUs at thresholds,
    # zero-area boxes and ties everywhere.
    bl = [np.array([r[:4] for r in mdl], np.float64).reshape(-1, 4) for mdl in models]
    sl = [np.array([r[4] for r in mdl], np.float64) for mdl in models]
    ll = [np.array([r[5] for r in mdl], np.int64) for mdl in models]
    args = (None, iou_thr, 0.0, conf_type, allows_overflow)
    got = ops.weighted_boxes_fusion(bl, sl, ll, *args)
    assert_same(got, reference.weighted_boxes_fusion(bl, sl, ll, *args))
    assert (np.diff(got[1]) <= 0).all()
    assert len(got[0]) <= sum(len(b) for b in bl)


def _staged():
    import sys

    return sys.modules["fastdet.ops.weighted_boxes_fusion"]._wbf_staged


@pytest.mark.parametrize("conf_type", range(4))
def test_gpu_path_glue_matches_the_cpu_kernel_on_cpu_tensors(conf_type, rng):
    # The GPU path (torch prefilter, sort and scores around the wbf_cluster kernel) run on CPU
    # tensors with the CPU copy of the clustering kernel, against the CPU kernel.
    for trial in range(8):
        m = int(rng.integers(1, 6))
        b, s, lab, models, skip, _ = _flat(rng, 60, m)
        w = rng.uniform(0.5, 2.0, m)
        args = (w, float(rng.choice([0.0, 0.3, 0.55, 0.9, 1.0])), conf_type, trial % 3 == 0)
        got = _staged()(b, s, lab, models, skip, *args)
        want = torch.ops.fastdet.weighted_boxes_fusion(
            b, s, lab, models, skip, torch.from_numpy(w), *args[1:]
        )
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
        if conf_type < 2:
            assert torch.equal(got[1], want[1])
        else:  # distinct-model weight sums in another order: last bits
            torch.testing.assert_close(got[1], want[1], rtol=1e-13, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_gpu_matches_cpu(conf_type, rng):
    for _ in range(4):
        m = int(rng.integers(1, 6))
        bl, sl, ll = ensemble(rng, m, 300, labels=4, objects=30)
        weights = list(rng.uniform(0.5, 3.0, m))
        kw = dict(weights=weights, iou_thr=0.55, skip_box_thr=0.05, conf_type=conf_type)
        tb = [torch.from_numpy(b).cuda() for b in bl]
        ts = [torch.from_numpy(s).cuda() for s in sl]
        tl = [torch.from_numpy(lab).long().cuda() for lab in ll]
        got = ops.weighted_boxes_fusion(tb, ts, tl, **kw)
        want = ops.weighted_boxes_fusion(bl, sl, ll, **kw)
        assert got[0].is_cuda and got[0].dtype == torch.float64
        np.testing.assert_array_equal(got[0].cpu().numpy(), want[0])
        np.testing.assert_array_equal(got[2].cpu().numpy(), want[2])
        np.testing.assert_allclose(got[1].cpu().numpy(), want[1], rtol=1e-13, atol=0)


@pytest.mark.gpu
def test_gpu_custom_op_passes_opcheck_and_flags_bad_input(rng):
    b, s, lab, models, skip, w = _flat(rng)
    args = tuple(x.cuda() for x in (b, s, lab, models, skip)) + (w,)
    op = torch.ops.fastdet.weighted_boxes_fusion
    torch.library.opcheck(op, args + (0.55, 2, False))
    with pytest.raises(ValueError, match="index argument is out of range"):
        op(*args[:3], args[3] + 9, *args[4:], 0.55, 0, False)
    bad = args[0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        op(bad, *args[1:], 0.55, 0, False)


@pytest.mark.parametrize("layout", ["sizes from 1e-4 to 1.5", "thin", "grid"])
def test_grid_search_matches_a_scan_of_every_cluster(layout, rng):
    # The CPU kernel looks only at clusters whose centres are within reach; the plain scan (the
    # CPU copy of the GPU clustering) compares with all. Thresholds near 0, at 1/2 and at 1.
    for thr in [0.0, 1e-9, 1e-3, 0.3, 0.4999, 0.5, 0.5001, 0.55, 0.9, 1.0]:
        n = int(rng.integers(1, 800))
        if layout == "grid":
            c, s = rng.integers(0, 9, (n, 2)) / 8, rng.integers(1, 5, (n, 2)) / 8
        elif layout == "thin":
            c = rng.uniform(0, 1, (n, 2))
            s = np.stack([rng.uniform(1e-3, 0.9, n), rng.uniform(1e-3, 0.02, n)], 1)
        else:
            c, s = rng.uniform(0, 1, (n, 2)), np.exp(rng.uniform(np.log(1e-4), np.log(1.5), (n, 2)))
        b = torch.from_numpy(np.concatenate([c - s / 2, c + s / 2], 1))
        sc = torch.from_numpy(rng.integers(0, 5, n) / 4 if layout == "grid" else rng.random(n))
        lab = torch.from_numpy(rng.integers(0, 3, n))
        models = torch.from_numpy(rng.integers(0, 2, n))
        skip = torch.zeros(n, dtype=torch.bool)
        w = np.array([1.0, 2.0])
        got = torch.ops.fastdet.weighted_boxes_fusion(
            b, sc, lab, models, skip, torch.from_numpy(w), thr, 0, False
        )
        want = _staged()(b, sc, lab, models, skip, w, thr, 0, False)
        assert all(torch.equal(g, x) for g, x in zip(got, want)), thr
