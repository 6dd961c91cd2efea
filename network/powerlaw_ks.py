"""KS distances between a sample and many fitted laws at once: the machinery shared by the power-law fit
(:mod:`ncap.network.powerlaw`) and the bounded power law (``powerlaw_tpl``).

A sample enters as its sorted unique values ``u`` with counts ``c`` (:func:`unique_counts`); a fit ``i``
as its exponent, support ``[v_i, hi_i]``, ``log Z`` and the index range of ``u`` it covers. All (fit,
point) pairs are evaluated in flat numpy arrays; :func:`ks_argmin` screens large problems and refines only
the fits that can still have the smallest distance (branch and bound).

The KS distance
---------------
``ks_variant="sup"`` (default) is the exact supremum of |empirical CDF - model CDF|:
for discrete data it equals the maximum over all integers ``x_min <= x <= max(x)`` used by Clauset's
reference code ``plfit`` and by the degree study, and for continuous data the usual two-sided KS
statistic. ``ks_variant="left"`` is ``powerlaw`` 2.0's convention (both CDFs taken as ``P(X < x)`` and
compared only at the observed values); it can only be smaller, and it is what to use to reproduce
``powerlaw``'s ``x_min``.
"""
from __future__ import annotations

import numpy as np

from ncap.network.powerlaw_norm import log_normaliser

__all__ = ["KS_VARIANTS", "check_variant", "ks_argmin", "unique_counts"]

KS_VARIANTS = ("sup", "left")

_CHUNK = 1 << 20  # elements per flat KS block


def check_variant(ks_variant: str) -> None:
    """Raise ``ValueError`` unless ``ks_variant`` is one of :data:`KS_VARIANTS`."""
    if ks_variant not in KS_VARIANTS:
        raise ValueError(f"ks_variant must be one of {KS_VARIANTS}, got {ks_variant!r}")


def unique_counts(x: np.ndarray, discrete: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values (float64) and their counts (int64); bincount for compact integer data."""
    if discrete:
        top = x.max()
        if top <= 4 * x.size + 1_000_000:
            cnt = np.bincount(x.astype(np.int64))
            u = np.flatnonzero(cnt)
            return u.astype(np.float64), cnt[u].astype(np.int64)
    u, c = np.unique(x, return_counts=True)
    return u, c.astype(np.int64)


# --------------------------------------------------------------------------- KS distances


def _ks_points(u, c, c_below, fid, j, *, a, hi, log_z, n_fit, start, discrete, variant):
    """CDF values at the points ``u[j]`` of fits ``fid`` (flat arrays of equal length).

    Returns ``(diff, emp_lt, mod_lt)``: the KS contribution ``|F_n - F|`` of each point (both one-sided
    limits for ``variant="sup"``) and the empirical / model ``P(X < u_j)``.
    """
    af, nf, lz = a[fid], n_fit[fid], log_z[fid]
    uj = u[j]
    emp_lt = (c_below[j] - c_below[start[fid]]) / nf
    log_sf = log_normaliser(af, uj, hi[fid], discrete=discrete) - lz  # log P(X >= u_j)
    mod_lt = -np.expm1(log_sf)
    diff = np.abs(emp_lt - mod_lt)
    if variant == "sup":
        emp_le = emp_lt + c[j] / nf
        mod_le = mod_lt + (np.exp(-af * np.log(uj) - lz) if discrete else 0.0)
        diff = np.maximum(diff, np.abs(emp_le - mod_le))
    return diff, emp_lt, mod_lt


def _segments(lens, first_index):
    """Flat (segment id, running index) arrays for segments of lengths ``lens`` starting at ``first_index``."""
    fid = np.repeat(np.arange(lens.size), lens)
    seg0 = np.cumsum(lens) - lens
    j = np.arange(int(lens.sum())) - np.repeat(seg0, lens) + np.repeat(first_index, lens)
    return fid, j, seg0


def _ks_distances(u, c, c_below, *, a, v, hi, log_z, n_fit, start, stop, discrete, variant):
    """Exact KS distance of many fits at once, each against the unique values ``u[start:stop]``.

    Fit ``i`` has exponent ``a[i]``, support ``[v[i], hi[i]]``, ``log Z = log_z[i]`` and ``n_fit[i]`` points;
    ``c_below[j]`` is the number of observations ``< u[j]``. Evaluated on a flat array of all
    (fit, point) pairs, about ``_CHUNK`` pairs at a time.
    """
    lens = (stop - start).astype(np.int64)
    out = np.zeros(a.size)
    ends = np.cumsum(lens)
    first = 0
    kw = {"a": a, "hi": hi, "log_z": log_z, "n_fit": n_fit, "start": start, "discrete": discrete, "variant": variant}
    while first < a.size:
        base = ends[first - 1] if first else 0
        last = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), first + 1)
        fid, j, seg0 = _segments(lens[first:last], start[first:last])
        diff, _, _ = _ks_points(u, c, c_below, fid + first, j, **kw)
        out[first:last] = np.maximum.reduceat(diff, seg0)
        first = last
    return out


def _ks_screen(u, c, c_below, cum_ck, *, k_per_fit, start, stop, **pk):
    """KS contributions of each fit on a subset of its points, with bounds for the points in between.

    The subset: ``k_per_fit`` points evenly spaced by rank in ``[start, stop)`` (both ends included) and
    the global cumulative-count checkpoints ``cum_ck`` inside it (they split heavy atoms). Both CDFs are
    non-decreasing, so between consecutive subset points ``j1 < j2`` every one-sided CDF value lies in
    ``[F(u_j1), F(u_j2))`` and no point strictly inside can contribute more than
    ``max(E_j2 - M_j1, M_j2 - E_j1)``.

    Returns
    -------
    fid, j, diff, e_lt, m_lt : ndarray, shape (m,)
        Fit id (sorted), point index, KS contribution, empirical and model ``P(X < u_j)``.
    """
    lens = (stop - start).astype(np.int64)
    k = np.minimum(lens, k_per_fit)
    fid_a, pos, _ = _segments(k, np.zeros(lens.size, dtype=np.int64))
    j_a = start[fid_a] + np.round(pos * (lens[fid_a] - 1) / np.maximum(k[fid_a] - 1, 1)).astype(np.int64)
    i0 = np.searchsorted(cum_ck, start, side="left")
    i1 = np.searchsorted(cum_ck, stop, side="left")
    fid_b, pos_b, _ = _segments(i1 - i0, i0)
    j_b = cum_ck[pos_b] if pos_b.size else pos_b
    key = np.sort(np.concatenate([fid_a, fid_b]) * (u.size + 1) + np.concatenate([j_a, j_b]))
    key = key[np.r_[True, key[1:] != key[:-1]]]
    fid, j = key // (u.size + 1), key % (u.size + 1)
    diff, e_lt, m_lt = _ks_points(u, c, c_below, fid, j, start=start, **pk)
    return fid, j, diff, e_lt, m_lt


def ks_argmin(u, c, c_below, *, a, v, hi, log_z, n_fit, start, stop, discrete, variant, valid):
    """KS distances, exact at least for every fit that can have the smallest one among ``valid``.

    Large problems are screened first (``_ks_screen``, 128 points per fit): the screened maximum is a
    lower bound ``lb`` of a fit's KS, and ``lb`` raised by the interval bounds an upper bound ``ub``. A
    fit with ``lb`` above the smallest ``ub`` of a valid fit cannot win and keeps ``lb``. For the others
    only intervals whose bound exceeds the fit's current maximum can change it; they are split at 16
    interior points, bounded again, and so on until none is left (branch and bound; each round is
    one vectorised evaluation). Returns ``(ks, exact)``.
    """
    arrays = {"a": a, "hi": hi, "log_z": log_z, "n_fit": n_fit, "start": start}
    pk = dict(discrete=discrete, variant=variant, **arrays)
    lens = (stop - start).astype(np.int64)
    if lens.sum() <= _CHUNK or not valid.any():
        return (_ks_distances(u, c, c_below, v=v, stop=stop, **pk), np.ones(a.size, dtype=bool))
    cum_le = c_below + c
    cum_ck = np.unique(np.searchsorted(cum_le, np.linspace(0, cum_le[-1], 129)[1:], side="left"))
    fid, j, diff, e, m = _ks_screen(u, c, c_below, cum_ck, k_per_fit=128, stop=stop, **pk)
    seg0 = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    ks = np.maximum.reduceat(diff, seg0)
    same = np.flatnonzero(fid[1:] == fid[:-1])
    iv = (fid[same], j[same], j[same + 1], e[same], m[same], e[same + 1], m[same + 1])
    ub = ks.copy()
    np.maximum.at(ub, iv[0], np.maximum(iv[5] - iv[4], iv[6] - iv[3]))
    alive = ks <= ub[valid].min()
    # refine the intervals that may still hold a fit's maximum, 16 interior points at a time
    while iv[0].size:
        f, jl, jr, el, ml, er, mr = iv
        keep = alive[f] & (jr - jl > 1) & (np.maximum(er - ml, mr - el) > ks[f])
        f, jl, jr, el, ml, er, mr = (x[keep] for x in iv)
        if not f.size:
            break
        inner = jr - jl - 1
        k = np.minimum(inner, 16)
        seg, pos, _ = _segments(k, np.ones(f.size, dtype=np.int64))
        jj = jl[seg] + np.where(inner[seg] <= 16, pos, np.round(pos * (jr[seg] - jl[seg]) / 17.0).astype(np.int64))
        ff = f[seg]
        d = np.empty(jj.size)
        ee = np.empty(jj.size)
        mm = np.empty(jj.size)
        for lo_ in range(0, jj.size, _CHUNK):
            sl = slice(lo_, lo_ + _CHUNK)
            d[sl], ee[sl], mm[sl] = _ks_points(u, c, c_below, ff[sl], jj[sl], **pk)
        np.maximum.at(ks, ff, d)
        # new intervals: (jl, p_1), (p_1, p_2), ..., (p_k, jr) of each refined interval
        first = np.r_[True, seg[1:] != seg[:-1]]
        last = np.r_[seg[1:] != seg[:-1], True]
        left_j = np.where(first, jl[seg], np.r_[0, jj[:-1]])
        left_e = np.where(first, el[seg], np.r_[0.0, ee[:-1]])
        left_m = np.where(first, ml[seg], np.r_[0.0, mm[:-1]])
        lj = np.flatnonzero(last)
        iv = tuple(np.concatenate(pair) for pair in (
            (ff, ff[lj]), (left_j, jj[lj]), (jj, jr[seg[lj]]), (left_e, ee[lj]), (left_m, mm[lj]),
            (ee, er[seg[lj]]), (mm, mr[seg[lj]]),
        ))
    return ks, alive

