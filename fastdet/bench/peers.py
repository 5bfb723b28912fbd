"""What a user would write instead of fastdet's kernels: numba versions of nms and box_iou.
Benchmark peers only; imported lazily so numba stays optional."""

from __future__ import annotations

import numpy as np


def numba_ops():
    """(nms, box_iou) compiled with numba, or None when numba is not installed."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=False, fastmath=False)
    def nms(boxes, scores, thr):
        order = np.argsort(-scores, kind="mergesort")
        n = boxes.shape[0]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        dead = np.zeros(n, dtype=np.bool_)
        keep = np.empty(n, dtype=np.int64)
        k = 0
        for a in range(n):
            i = order[a]
            if dead[i]:
                continue
            keep[k] = i
            k += 1
            for b in range(a + 1, n):
                j = order[b]
                if dead[j]:
                    continue
                w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
                h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
                inter = w * h
                if inter / (areas[i] + areas[j] - inter) > thr:
                    dead[j] = True
        return keep[:k]

    @numba.njit(parallel=True, fastmath=False)
    def box_iou(a, b):
        n, m = a.shape[0], b.shape[0]
        out = np.empty((n, m), dtype=a.dtype)
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        for i in numba.prange(n):
            area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
            for j in range(m):
                w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
                h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
                inter = w * h
                out[i, j] = inter / (area_a + area_b[j] - inter)
        return out

    return nms, box_iou
