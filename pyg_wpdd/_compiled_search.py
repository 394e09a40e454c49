r"""Compiled CPU kernel of the exact periodic k-nearest-neighbour search (numba).

It runs the search of :mod:`pyg_wpdd.neighbors` one structure at a time in a compiled loop,
so each cell costs only its own candidates. The vectorised PyTorch search pays a fixed cost
per block of equal-sized cells (about a millisecond, an estimate), which dominates on small
cells and mixed datasets. The math is the same:

- atoms are wrapped into the cell, each fractional axis starting after its largest gap;
- shifts :math:`|n_a| \le \lfloor r / h_a + \sigma_a \rfloor` cover every neighbour within
  :math:`r`, and shifts whose images cannot come within :math:`r` (bounded with the smallest
  eigenvalue of :math:`\mathbf{L}\mathbf{L}^\top`) are skipped;
- a structure whose k-th neighbour lies beyond the covered radius is searched again with
  that distance as the radius, which is then complete;
- neighbours are ordered by distance (quantised to :data:`~pyg_wpdd.neighbors.SORT_QUANTUM`),
  then neighbour index, then shift (lexicographic).

Distances are computed in float64. The caller prepares the cells (completion of
non-periodic rows, inverse, widths, smallest eigenvalue) in PyTorch and splits the flat
outputs per structure.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_INF = math.inf

#: Largest box of lattice shifts searched for one structure. More means a periodic direction far
#: thinner than the neighbour radius (a nearly flat cell), which would exhaust memory.
MAX_SHIFTS = 2_000_000


@njit(cache=True)
def _grow(array, size):
    """Return ``array`` with room for at least ``size`` rows, keeping its contents."""
    if size <= array.shape[0]:
        return array
    capacity = max(size, 2 * array.shape[0])
    shape = (capacity,) + array.shape[1:]
    grown = np.empty(shape, dtype=array.dtype)
    grown[:array.shape[0]] = array
    return grown


@njit(cache=True)
def _wrap(frac, periodic):
    """Wrap fractional coordinates into ``[o_a, o_a + 1)`` after the largest gap per axis.

    Returns the wrapped coordinates, the integer offsets (``frac = wrapped + offset``) and
    the spread (max - min) of the wrapped coordinates per axis (0 along non-periodic axes).
    """
    m = frac.shape[0]
    wrapped = frac.copy()
    offset = np.zeros((m, 3), dtype=np.int64)
    spread = np.zeros(3)
    for a in range(3):
        if not periodic[a]:
            continue
        for i in range(m):
            floor = math.floor(frac[i, a])
            value = frac[i, a] - floor
            # frac - floor(frac) can round up to exactly 1.0 for tiny negative frac.
            if value >= 1.0:
                value -= 1.0
                floor += 1
            wrapped[i, a] = value
            offset[i, a] = floor

        ordered = np.sort(wrapped[:, a])
        best_gap, start = ordered[0] + 1.0 - ordered[m - 1], 0
        for g in range(m - 1):
            gap = ordered[g + 1] - ordered[g]
            if gap > best_gap or (gap == best_gap and g + 1 < start):
                best_gap, start = gap, g + 1
        origin = ordered[start]
        low, high = _INF, -_INF
        for i in range(m):
            if wrapped[i, a] < origin:
                wrapped[i, a] += 1.0
                offset[i, a] -= 1
            low = min(low, wrapped[i, a])
            high = max(high, wrapped[i, a])
        spread[a] = high - low
    return wrapped, offset, spread


@njit(cache=True)
def _reachable_shifts(counts, spread, periodic, cell, smallest_eigenvalue, reach):
    """Enumerate shifts in ``[-n, n]^3`` lexicographically, keeping those within ``reach``.

    Returns the integer shifts ``[S, 3]``, their Cartesian translations ``[S, 3]`` and the
    row of the zero shift.
    """
    total = (2 * counts[0] + 1) * (2 * counts[1] + 1) * (2 * counts[2] + 1)
    if total > MAX_SHIFTS:
        raise ValueError(
            'The neighbour search needs more than 2,000,000 lattice shifts for one structure: '
            'a periodic direction is far thinner than the neighbour radius. Check the lattice '
            'vectors, or set pbc=False along that direction.')
    shifts = np.empty((total, 3), dtype=np.int64)
    # The slack keeps shifts at the boundary despite rounding.
    limit = (reach * (1.0 + 1e-9) + 1e-9) ** 2
    count, zero = 0, 0
    for sa in range(-counts[0], counts[0] + 1):
        for sb in range(-counts[1], counts[1] + 1):
            for sc in range(-counts[2], counts[2] + 1):
                gap_sq = 0.0
                for a, s in enumerate((sa, sb, sc)):
                    if periodic[a]:
                        gap = max(abs(s) - spread[a], 0.0)
                        gap_sq += gap * gap
                is_zero = sa == 0 and sb == 0 and sc == 0
                if not is_zero and gap_sq * smallest_eigenvalue > limit:
                    continue
                if is_zero:
                    zero = count
                shifts[count, 0], shifts[count, 1], shifts[count, 2] = sa, sb, sc
                count += 1
    shifts = shifts[:count]
    return shifts, _times_cell(shifts.astype(np.float64), cell), zero


@njit(cache=True)
def _times_cell(rows, matrix):
    """Return ``rows @ matrix`` for ``[n, 3]`` rows and a ``[3, 3]`` matrix."""
    out = np.zeros((rows.shape[0], 3))
    for r in range(rows.shape[0]):
        for a in range(3):
            value = 0.0
            for c in range(3):
                value += rows[r, c] * matrix[c, a]
            out[r, a] = value
    return out


@njit(cache=True)
def _smallest_sorted(values, k, scratch):
    """Return the ``k`` smallest of ``values`` in ascending order, as a view of ``scratch``.

    Quickselect (median-of-three pivots, Hoare partition) and an insertion sort of the first
    ``k``: 0.75 us against 2.4 us for ``np.sort(np.partition(values, k - 1)[:k])`` under
    numba, for k = 50 of 285 candidates (measured on one core).
    """
    n = values.shape[0]
    for i in range(n):
        scratch[i] = values[i]
    low, high, target = 0, n - 1, k - 1
    while high > low:
        middle = (low + high) >> 1
        a, b, c = scratch[low], scratch[middle], scratch[high]
        if a > b:
            a, b = b, a
        if b > c:
            b, c = c, b
        if a > b:
            a, b = b, a
        pivot = b
        i, j = low, high
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if target <= j:
            high = j
        elif target >= i:
            low = i
        else:
            break
    for i in range(1, k):
        value = scratch[i]
        j = i - 1
        while j >= 0 and scratch[j] > value:
            scratch[j + 1] = scratch[j]
            j -= 1
        scratch[j + 1] = value
    return scratch[:k]


@njit(cache=True)
def _squared_distances(positions, translations, centre, out):
    """Write the squared distances from atom ``centre`` to every image ``(j, s)`` into ``out``."""
    num_shifts = translations.shape[0]
    for j in range(positions.shape[0]):
        dx = positions[j, 0] - positions[centre, 0]
        dy = positions[j, 1] - positions[centre, 1]
        dz = positions[j, 2] - positions[centre, 2]
        for s in range(num_shifts):
            x = dx + translations[s, 0]
            y = dy + translations[s, 1]
            z = dz + translations[s, 2]
            out[j * num_shifts + s] = x * x + y * y + z * z


@njit(cache=True)
def search_structures(pos, starts, cells, full_cells, inverses, periodic, widths, volumes,
                      smallest_eigenvalues, k_edge, k_dist, tie_tol, quantum):
    """Search every structure; ``k_edge`` or ``k_dist`` may be 0 to skip edges or distances.

    Args:
        pos: ``[N, 3]`` float64 positions of all structures, concatenated.
        starts: ``[B + 1]`` int64 first atom of each structure, then ``N``.
        cells, full_cells, inverses: ``[B, 3, 3]`` original cells, cells with non-periodic
            rows completed, and the inverses of the completed cells.
        periodic: ``[B, 3]`` bool.
        widths, volumes, smallest_eigenvalues: ``[B, 3]``, ``[B]``, ``[B]`` of the completed
            cells (the eigenvalue of ``L L^T``, lowered to bound rounding).

    Returns:
        ``(edge_j, edge_i, edge_shift, edge_vec, edge_dist, edge_counts, distances)``: edges
        of all structures in order (local atom indices), the number of edges per structure,
        and the ``k_dist`` nearest distances of every atom ``[N, k_dist]``.
    """
    num_structures = starts.shape[0] - 1
    k = max(k_edge, k_dist)
    capacity = max(1, pos.shape[0] * max(k_edge, 1))
    edge_j = np.empty(capacity, dtype=np.int64)
    edge_i = np.empty(capacity, dtype=np.int64)
    edge_shift = np.empty((capacity, 3), dtype=np.int64)
    edge_vec = np.empty((capacity, 3))
    edge_dist = np.empty(capacity)
    edge_counts = np.zeros(num_structures, dtype=np.int64)
    distances = np.empty((pos.shape[0], k_dist))
    num_edges = 0

    for b in range(num_structures):
        first, m = starts[b], starts[b + 1] - starts[b]
        atoms = pos[first:first + m]
        wrapped, offset, spread = _wrap(_times_cell(atoms, inverses[b]), periodic[b])
        wrapped_cart = _times_cell(wrapped, full_cells[b])

        # A sphere holding k + 1 atoms at the cell's density, slightly enlarged so that most
        # cells need one pass.
        radius = 1.2 * (3.0 * (k + 1) * volumes[b] / (4.0 * math.pi * m)) ** (1.0 / 3.0)
        while True:
            counts = np.zeros(3, dtype=np.int64)
            covered = _INF
            for a in range(3):
                if periodic[b, a]:
                    counts[a] = math.floor(radius / widths[b, a] + spread[a])
                    covered = min(covered, (counts[a] + 1.0 - spread[a]) * widths[b, a])
            # A hair below the bound, so that rounding cannot escape it.
            covered = covered * (1.0 - 1e-12) - 1e-12
            reach = min(covered, radius)
            shifts, translations, zero = _reachable_shifts(
                counts, spread, periodic[b], full_cells[b], smallest_eigenvalues[b], reach)
            num_shifts = shifts.shape[0]
            width = m * num_shifts
            if width < k + 1:
                # Fewer candidates than neighbours requested: widen the shell.
                if math.isfinite(reach):
                    radius = 2.0 * reach
                else:
                    radius = 2.0 * widths[b].min()
                continue

            # Candidate (j, s) sits at flat index j * S + s.
            squared = np.empty((m, width))
            nearest = np.empty((m, k))
            scratch = np.empty(width)
            needed = 0.0
            for i in range(m):
                _squared_distances(wrapped_cart, translations, i, squared[i])
                squared[i, i * num_shifts + zero] = _INF
                nearest[i] = _smallest_sorted(squared[i], k, scratch)
                if k_edge > 0:
                    needed = max(needed, math.sqrt(nearest[i, k_edge - 1]) + tie_tol)
                if k_dist > 0:
                    needed = max(needed, math.sqrt(nearest[i, k_dist - 1]))
            if needed <= reach:
                break
            # The distances found bound the true ones, so this radius is complete.
            radius = needed * (1.0 + 1e-9) + 1e-9 if math.isfinite(needed) else 2.0 * radius

        for i in range(m):
            if k_dist > 0:
                distances[first + i] = np.sqrt(nearest[i, :k_dist])
            if k_edge == 0:
                continue

            row = squared[i]
            bound = math.sqrt(nearest[i, k_edge - 1]) + tie_tol
            # The relative slack keeps every candidate whose rounded root is within bound.
            sq_bound = (bound * (1.0 + 1e-12)) ** 2
            selected = np.empty(width, dtype=np.int64)
            count = 0
            for c in range(width):
                if row[c] <= sq_bound and math.sqrt(row[c]) <= bound:
                    selected[count] = c
                    count += 1
            selected = selected[:count]
            keys = np.empty(count, dtype=np.int64)
            for c in range(count):
                keys[c] = np.int64(np.rint(math.sqrt(row[selected[c]]) / quantum))
            # Stable, so equal distances keep the ascending flat order (j, then shift).
            order = np.argsort(keys, kind='mergesort')

            end = num_edges + count
            edge_j = _grow(edge_j, end)
            edge_i = _grow(edge_i, end)
            edge_shift = _grow(edge_shift, end)
            edge_vec = _grow(edge_vec, end)
            edge_dist = _grow(edge_dist, end)
            for c in range(count):
                flat = selected[order[c]]
                j, s = flat // num_shifts, flat % num_shifts
                e = num_edges + c
                edge_j[e], edge_i[e] = j, i
                # Shift relative to the caller's (unwrapped) positions, and the displacement
                # from the original positions and cell.
                length_sq = 0.0
                for a in range(3):
                    edge_shift[e, a] = shifts[s, a] - offset[j, a] + offset[i, a]
                for a in range(3):
                    value = atoms[j, a] - atoms[i, a]
                    for c2 in range(3):
                        value += edge_shift[e, c2] * cells[b, c2, a]
                    edge_vec[e, a] = value
                    length_sq += value * value
                edge_dist[e] = math.sqrt(length_sq)
            num_edges = end
            edge_counts[b] += count

    return (edge_j[:num_edges], edge_i[:num_edges], edge_shift[:num_edges],
            edge_vec[:num_edges], edge_dist[:num_edges], edge_counts, distances)
