"""NumPy views of shard columns: ragged list columns as padded arrays, curves read at a point."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def list_to_2d(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list<float> column as an [N, K] float array, NaN for nulls and padding."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    vals = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    k = int(lengths.max())
    if (lengths == k).all():
        return vals.reshape(n, k)
    out = np.full((n, k), np.nan, np.float32)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cols = np.arange(len(vals)) - np.repeat(starts, lengths)
    out[rows, cols] = vals
    return out


def value_at(grid_NK: np.ndarray, y_NK: np.ndarray, x_N: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row's curve y(grid) at x (valid steps taken as a prefix;
    clamped to the first / last valid step)."""
    valid = ~np.isnan(y_NK) & ~np.isnan(grid_NK)
    nvalid = valid.sum(1)
    g = np.where(valid, grid_NK, np.inf)
    j = (g <= x_N[:, None]).sum(1)
    lo = np.clip(j - 1, 0, np.maximum(nvalid - 1, 0))
    hi = np.clip(j, 0, np.maximum(nvalid - 1, 0))
    r = np.arange(len(x_N))
    g0, g1, y0, y1 = grid_NK[r, lo], grid_NK[r, hi], y_NK[r, lo], y_NK[r, hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(g1 > g0, (x_N - g0) / (g1 - g0), 0.0)
    out = y0 + np.clip(w, 0, 1) * (y1 - y0)
    return np.where(nvalid > 0, out, np.nan)


def last_valid(y_NK: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(y_NK)
    idx = np.where(ok.any(1), y_NK.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), 0)
    out = y_NK[np.arange(len(y_NK)), idx]
    return np.where(ok.any(1), out, np.nan)
