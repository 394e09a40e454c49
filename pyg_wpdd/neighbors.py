r"""Exact k-nearest-neighbour search in periodic crystals, vectorised in PyTorch.

The search enumerates every lattice shift that can contain a neighbour within a radius
:math:`r`. With the atoms wrapped into the cell (fractional coordinates in a window
:math:`[o_a, o_a + 1)` along periodic directions, starting after the largest empty gap so that
atoms near opposite faces end up together), a neighbour within :math:`r` differs by at most
:math:`r / h_a` in the fractional coordinate :math:`a`, where

.. math::
    h_a = \frac{V}{\lVert \mathbf{b} \times \mathbf{c} \rVert}

is the perpendicular width of the cell along :math:`\mathbf{a}`. With :math:`\sigma_a < 1`
the spread (max minus min) of the wrapped fractional coordinates, shifts
:math:`|n_a| \le \lfloor r / h_a + \sigma_a \rfloor \le \lceil r / h_a \rceil` therefore
cover every neighbour within :math:`r`, also for 1-atom and strongly skewed cells, and slabs
need no images across their vacuum. In large blocks of structures the box of shifts is
pruned further, per structure, to the shifts whose image of the atoms' bounding
parallelepiped can come within :math:`r` (see :func:`_reachable_shifts`). The radius starts
from the atomic density and is raised to the largest k-th neighbour distance found, so a
second pass is always complete. Non-periodic directions (``pbc`` false) take no shifts.

In the PyTorch search, structures with the same atom count are computed together. Among
those, structures with similar shift ranges share one merged grid, because every block has a
fixed cost (about a millisecond on CPU, an estimate). A larger grid only adds true lattice
images, so results do not depend on the grouping.

Two engines run this search with the same results. On CPU a compiled kernel
(:mod:`pyg_wpdd._compiled_search`, numba) searches one structure after another with no
per-block cost; its first call in a fresh environment compiles it (about 12 s on one core),
later processes load it from numba's cache. Tensors on another device, machines without numba,
and ``PYG_WPDD_SEARCH=torch`` use the vectorised PyTorch search below.

All distances are computed in float64 and returned as float32, on the device of ``pos``.
Candidates are selected on squared distances; the square root is taken of the selected ones.

Neighbours are sorted by centre atom, then distance, then neighbour index, then shift
(lexicographic over :math:`(a, b, c)`). Two distances are treated as equal for this order
when they agree to :data:`SORT_QUANTUM` Å.

NOTE: the CUDA path is covered by ``test_cuda_matches_cpu``, which has not yet run on a GPU.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

#: Default tolerance (Å) for ties at the k-th distance: neighbours with
#: ``d <= d_k + tie_tol`` are all kept.
DEFAULT_TIE_TOL = 1e-6

#: Distances are rounded to this grid (Å) only to order neighbours, so that numerically equal
#: distances are ordered by neighbour index and shift.
SORT_QUANTUM = 1e-9

# Maximum number of candidate (centre, neighbour, shift) distances held at once. Each costs
# 8 to 16 bytes of float64 work memory, so one step uses roughly 32 to 64 MB (an estimate).
_MAX_CANDIDATES = 1 << 22

# Estimated fixed cost of one vectorised block (Python and kernel launch overhead), in
# candidate distances: about 1 ms against about 30 ns per candidate, measured on one core of
# a loaded 2-core CPU with PyTorch 2.13.
_BLOCK_COST = 1 << 15

# Blocks with fewer candidate distances skip the pruning of shifts, whose fixed cost would
# exceed its savings (an estimate).
_PRUNE_MIN_CANDIDATES = 1 << 17

# Largest box of lattice shifts searched for one structure (the compiled kernel uses the same
# cap). More means a periodic direction far thinner than the neighbour radius.
_MAX_SHIFTS = 2_000_000

# Candidates fetched beyond the k-th to catch ties at the k-th distance in one pass.
_TIE_MARGIN = 8

StructureTuple = Tuple[Tensor, Tensor, Optional[Tensor]]

_ALL_PERIODIC = torch.ones(3, dtype=torch.bool)


@dataclass
class PeriodicNeighbors:
    r"""Neighbour lists of one crystal, in PyG's ``source_to_target`` flow.

    Attributes:
        edge_index (torch.Tensor): ``[2, num_edges]`` long, row 0 the neighbour :math:`j`,
            row 1 the centre :math:`i`.
        edge_dist (torch.Tensor): ``[num_edges]`` float32 distances in Å.
        edge_vec (torch.Tensor): ``[num_edges, 3]`` float32,
            :math:`\mathbf{p}_j + \mathbf{s} \mathbf{L} - \mathbf{p}_i`.
        edge_shift (torch.Tensor): ``[num_edges, 3]`` long lattice shift :math:`\mathbf{s}`.
    """

    edge_index: Tensor
    edge_dist: Tensor
    edge_vec: Tensor
    edge_shift: Tensor


def perpendicular_widths(cell: Tensor) -> Tensor:
    r"""Compute the cell widths :math:`h_a = V / \lVert \mathbf{b} \times \mathbf{c} \rVert`.

    Args:
        cell (torch.Tensor): ``[3, 3]`` or ``[batch, 3, 3]``, rows are lattice vectors.

    Returns:
        torch.Tensor: ``[3]`` or ``[batch, 3]`` distances between opposite cell faces.
    """
    a, b, c = cell[..., 0, :], cell[..., 1, :], cell[..., 2, :]
    volume = torch.linalg.det(cell).abs()
    areas = torch.stack([
        torch.linalg.cross(b, c).norm(dim=-1),
        torch.linalg.cross(c, a).norm(dim=-1),
        torch.linalg.cross(a, b).norm(dim=-1),
    ], dim=-1)
    return volume.unsqueeze(-1) / areas


def _complete_cell(cell: Tensor, pbc: Tensor) -> Tensor:
    """Replace non-periodic lattice rows by unit vectors orthogonal to the periodic ones.

    Only the periodic rows of the cell matter for the search. The other rows may be zero in
    molecules or slabs, so they are replaced to make the cell invertible.
    """
    periodic = cell[pbc]
    if periodic.shape[0] > 0:
        rank = int(torch.linalg.matrix_rank(periodic))
        if rank < periodic.shape[0]:
            raise ValueError(
                f'The periodic lattice vectors {periodic.tolist()} are linearly dependent. '
                'Give a cell whose periodic rows span a lattice.')
    if bool(pbc.all()):
        return cell

    # Right singular vectors beyond the periodic rows span their orthogonal complement.
    padded = torch.cat([periodic, torch.zeros(3 - periodic.shape[0], 3, dtype=cell.dtype,
                                            device=cell.device)])
    _, _, vh = torch.linalg.svd(padded)
    completed = cell.clone()
    completed[~pbc] = vh[periodic.shape[0]:]
    return completed


def _shift_grid(n: Sequence[int], device: torch.device) -> Tensor:
    """Return all integer shifts in ``[-n_a, n_a]^3``, lexicographic, as ``[S, 3]`` long.

    Grids are cached per range and device, so callers must not modify the result in place.
    """
    return _cached_shift_grid(tuple(int(na) for na in n), str(device))


@functools.lru_cache(maxsize=256)
def _cached_shift_grid(n: Tuple[int, int, int], device: str) -> Tensor:
    ranges = [torch.arange(-na, na + 1, device=device) for na in n]
    return torch.cartesian_prod(*ranges).reshape(-1, 3)


@dataclass
class _Prepared:
    """Float64 view of a group of structures with the same number of atoms."""

    index: Tensor          # [B] positions of these structures in the caller's list
    pos: Tensor            # [B, m, 3] original Cartesian positions
    cell: Tensor           # [B, 3, 3] original cell
    pos_wrapped: Tensor    # [B, m, 3] positions wrapped into the cell
    cell_full: Tensor      # [B, 3, 3] cell with non-periodic rows completed
    offset: Tensor         # [B, m, 3] long, pos = pos_wrapped + offset @ cell
    pbc: Tensor            # [B, 3] bool
    widths: Tensor         # [B, 3] perpendicular widths of cell_full
    spread: Tensor         # [B, 3] max - min of the wrapped fractional coordinates


def _close_largest_gap(wrapped: Tensor, offset: Tensor) -> Tuple[Tensor, Tensor]:
    """Move the wrapping window of each direction to start after the largest empty gap.

    ``wrapped`` ``[B, m, 3]`` contains fractional coordinates in ``[0, 1)``. Atoms near both
    faces (0.01 and 0.99) have a spread near 1, although they are 0.02 apart across the
    face. Adding 1 to the coordinates below the end of the largest circular gap puts them in
    ``[o, o + 1)`` with the smallest spread, which shrinks the shift ranges and bounds.
    ``offset`` is lowered by the same 1, so ``wrapped + offset`` is unchanged.
    """
    ordered = wrapped.sort(dim=1).values
    gaps = torch.cat([ordered[:, 1:] - ordered[:, :-1],
                      ordered[:, :1] + 1.0 - ordered[:, -1:]], dim=1)
    # Gap g runs from atom g to atom g + 1 (cyclically), so the window starts at atom g + 1.
    start = (gaps.argmax(dim=1, keepdim=True) + 1) % wrapped.shape[1]
    origin = ordered.gather(1, start)
    below = wrapped < origin
    return torch.where(below, wrapped + 1.0, wrapped), torch.where(below, offset - 1.0, offset)


def _check_volumes(volume: Tensor, index: Tensor) -> None:
    """Raise ``ValueError`` for the first cell of volume below 1e-8 Å^3 (``index`` names it)."""
    singular = volume < 1e-8
    if bool(singular.any()):
        first = int(singular.nonzero()[0])
        raise ValueError(
            f'Structure {int(index[first])} has a singular cell (volume '
            f'{float(volume[first]):.3g} Å^3). Give three linearly independent lattice '
            'vectors, or mark empty directions as non-periodic with pbc=False.')


def _prepare(index: Tensor, pos: Tensor, cell: Tensor, pbc: Tensor) -> _Prepared:
    """Wrap the atoms of ``B`` structures with ``m`` atoms each into their cells."""
    if bool((~pbc).any()):
        cell_full = torch.stack([_complete_cell(c, p) for c, p in zip(cell, pbc)])
    else:
        cell_full = cell

    _check_volumes(torch.linalg.det(cell_full).abs(), index)

    frac = torch.linalg.solve(cell_full.transpose(1, 2), pos.transpose(1, 2)).transpose(1, 2)
    offset = torch.floor(frac)
    wrapped = frac - offset
    # frac - floor(frac) can round up to exactly 1.0 for tiny negative frac.
    rounded_up = wrapped >= 1.0
    wrapped = torch.where(rounded_up, wrapped - 1.0, wrapped)
    offset = torch.where(rounded_up, offset + 1.0, offset)

    wrapped, offset = _close_largest_gap(wrapped, offset)

    periodic = pbc.unsqueeze(1).expand_as(frac)
    wrapped = torch.where(periodic, wrapped, frac)
    offset = torch.where(periodic, offset, torch.zeros_like(offset))

    return _Prepared(
        index=index,
        pos=pos,
        cell=cell,
        pos_wrapped=wrapped @ cell_full,
        cell_full=cell_full,
        offset=offset.long(),
        pbc=pbc,
        widths=perpendicular_widths(cell_full),
        spread=torch.where(pbc, wrapped.amax(dim=1) - wrapped.amin(dim=1),
                           torch.zeros_like(pbc, dtype=wrapped.dtype)),
    )


def _initial_radius(prep: _Prepared, k: int) -> Tensor:
    """Estimate the radius of a sphere holding ``k + 1`` atoms at the cell's density."""
    m = prep.pos.shape[1]
    volume = torch.linalg.det(prep.cell_full).abs()
    radius = (3.0 * (k + 1) * volume / (4.0 * math.pi * m)) ** (1.0 / 3.0)
    # Slightly above the estimate, so that most cells need a single pass.
    return 1.2 * radius


def _shift_counts(radius: Tensor, prep: _Prepared) -> Tensor:
    """Return ``n_a = floor(r / h_a + spread_a)`` per periodic direction, 0 elsewhere.

    A neighbour within ``r`` differs by at most ``r / h_a`` in fractional coordinate ``a``,
    and two wrapped atoms differ by at most ``spread_a`` before the shift, so larger shifts
    cannot reach it. This is at most ``ceil(r / h_a)``, and much less across vacuum.
    """
    n = torch.floor(radius.unsqueeze(-1) / prep.widths + prep.spread).long()
    return torch.where(prep.pbc, n, torch.zeros_like(n))


def _covered_radius(n: Tensor, prep: _Prepared) -> Tensor:
    """Return the radius within which shifts ``[-n, n]`` find every neighbour, ``[B]``."""
    reach = (n.to(prep.widths.dtype) + 1.0 - prep.spread) * prep.widths
    reach = torch.where(prep.pbc, reach, torch.full_like(reach, math.inf))
    # A hair below the bound, so that rounding in the wrapped coordinates cannot escape it.
    return reach.min(dim=-1).values * (1.0 - 1e-12) - 1e-12


def _candidate_sq_distances(prep: _Prepared, rows: Tensor, shifts: Tensor,
                            centres: slice, zero_shift: int) -> Tensor:
    """Squared distances from centres to all images, ``[b, c, m * S]``, self image at inf.

    The square root is taken only of the few selected candidates: it is monotonic, so it
    changes neither the selection nor the order.
    """
    pos = prep.pos_wrapped[rows]
    images = pos.unsqueeze(2) + (shifts.to(pos.dtype) @ prep.cell_full[rows]).unsqueeze(1)
    images = images.flatten(1, 2)
    centre_pos = pos[:, centres]

    # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y as one batched matrix product. In float64 the error
    # of d^2 is about 1e-15 |x|^2, so for coordinates under 100 Å the error of d stays
    # below about 1e-10 Å (an estimate), far below the float32 output and the tie tolerance.
    # Stored edge distances are recomputed directly from the displacement.
    # Squared norms as a product with a ones vector: a sum over a last axis of length 3 is
    # several times slower in PyTorch 2.13 on CPU.
    ones = torch.ones(3, dtype=pos.dtype, device=pos.device)
    sq = torch.baddbmm(((images * images) @ ones).unsqueeze(1), centre_pos,
                       images.transpose(1, 2), alpha=-2.0)
    sq.add_(((centre_pos * centre_pos) @ ones).unsqueeze(-1)).clamp_min_(0.0)

    # The flat index of image (j, s) is j * S + s.
    num_shifts = shifts.shape[0]
    centre_ids = torch.arange(pos.shape[1], device=pos.device)[centres]
    self_image = centre_ids * num_shifts + zero_shift
    sq[:, torch.arange(centre_ids.numel(), device=pos.device), self_image] = math.inf
    return sq


def _order_ties(dist: Tensor, flat: Tensor, cap: float, width: int) -> Tuple[Tensor, Tensor]:
    """Sort candidates of each row by quantised distance, then flat index ``j * S + s``.

    Only candidates with ``dist <= cap`` must come out in this order: larger ones are
    dropped by the caller. Each key packs the quantised distance (clamped just above ``cap``)
    and the flat index into one int64, so that one sort replaces two.
    """
    limit = math.floor(cap / SORT_QUANTUM) + 2
    if math.isfinite(cap) and (limit + 1) * width < 2 ** 62:
        quantised = torch.round(dist.clamp(max=cap) / SORT_QUANTUM).long()
        quantised = torch.where(dist <= cap, quantised, torch.full_like(quantised, limit))
        order = torch.sort(quantised * width + flat, dim=-1).indices
        return dist.gather(-1, order), flat.gather(-1, order)

    by_index = torch.sort(flat, dim=-1).indices
    dist, flat = dist.gather(-1, by_index), flat.gather(-1, by_index)
    key = torch.round(dist / SORT_QUANTUM).long()
    by_key = torch.sort(key, dim=-1, stable=True).indices
    return dist.gather(-1, by_key), flat.gather(-1, by_key)


def _select_edges(sq: Tensor, kth: Tensor, tie_tol: float, num_shifts: int, nearest: Tensor,
                  nearest_index: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Keep every candidate within ``kth + tie_tol``, ordered by distance, j, then shift.

    ``sq`` contains the squared candidate distances. ``nearest`` / ``nearest_index`` are the
    distances and flat indices of the smallest candidates of each row from
    :func:`torch.topk`. When the last of them is still a tie, the whole row is searched.
    """
    bound = kth + tie_tol
    if nearest.shape[-1] < sq.shape[-1] and bool((nearest[..., -1] <= bound).any()):
        # The relative slack makes the squared test include every candidate whose rounded
        # square root is within the bound. Extra candidates are dropped below.
        sq_bound = (bound * (1.0 + 1e-12)).square().unsqueeze(-1)
        width = int((sq <= sq_bound).sum(-1).max())
        nearest_sq, nearest_index = torch.topk(sq, width, dim=-1, largest=False, sorted=True)
        nearest = nearest_sq.sqrt()

    ordered, flat = _order_ties(nearest, nearest_index, float(bound.max()), sq.shape[-1])
    keep = ordered <= bound.unsqueeze(-1)
    batch, centre, rank = keep.nonzero(as_tuple=True)
    flat = flat[batch, centre, rank]
    return batch, centre, flat // num_shifts, flat % num_shifts, ordered[batch, centre, rank]


def _plan_shift_grids(ranges: List[List[int]], counts: List[int], m: int
                      ) -> List[Tuple[List[int], List[int]]]:
    """Merge shift ranges of one periodicity pattern into fewer, larger grids.

    Each vectorised block has a fixed cost of roughly :data:`_BLOCK_COST` candidate
    distances (an estimate), so groups with similar ranges are cheaper as one block over
    the elementwise maximum range. A larger grid only adds true lattice images, so the
    result is unchanged. Returns ``(grid range, member group ids)`` pairs.
    """
    def grid_size(n):
        return (2 * n[0] + 1) * (2 * n[1] + 1) * (2 * n[2] + 1)

    order = sorted(range(len(ranges)), key=lambda g: (grid_size(ranges[g]), ranges[g]))
    plans: List[Tuple[List[int], List[int]]] = []
    grid, members, count = None, [], 0
    for g in order:
        if grid is not None:
            merged = [max(a, b) for a, b in zip(grid, ranges[g])]
            separate = m * m * (grid_size(grid) * count + grid_size(ranges[g]) * counts[g])
            together = m * m * grid_size(merged) * (count + counts[g])
            if together <= separate + _BLOCK_COST:
                grid, count = merged, count + counts[g]
                members.append(g)
                continue
            plans.append((grid, members))
        grid, members, count = list(ranges[g]), [g], counts[g]
    plans.append((grid, members))
    return plans


def _reachable_shifts(prep: _Prepared, rows: Tensor, shifts: Tensor, reach: Tensor) -> Tensor:
    r"""Mark the shifts whose images can hold a neighbour within ``reach``, ``[B, S]`` bool.

    Wrapped atoms differ by :math:`\boldsymbol{\delta}\mathbf{L}` with
    :math:`|\delta_a| \le \sigma_a` (the spread), so a candidate of shift :math:`\mathbf{s}`
    is :math:`(\mathbf{s} + \boldsymbol{\delta})\mathbf{L}` away, and

    .. math::
        \lVert (\mathbf{s} + \boldsymbol{\delta})\mathbf{L} \rVert \ge
        \sqrt{\lambda_{\min}(\mathbf{L}\mathbf{L}^\top)} \,
        \big\lVert \max(|\mathbf{s}| - \boldsymbol{\sigma}, 0) \big\rVert.

    This lower bound is exact for cubic cells and weaker for skewed ones, where the box of
    shifts from :func:`_shift_counts` stays the tighter bound. A shift is dropped for a
    structure only when the bound exceeds its ``reach``.
    """
    cell = prep.cell_full[rows]
    eigenvalues = torch.linalg.eigvalsh(cell @ cell.transpose(1, 2))
    # eigvalsh is backward stable: its error is a small multiple of 1e-16 times the largest
    # eigenvalue, so this lowers the smallest one below its true value.
    smallest = (eigenvalues[:, 0] - 1e-12 * eigenvalues[:, -1]).clamp_min(0.0)
    # Non-periodic directions are not wrapped, so the difference is unbounded there, but
    # their shift is always 0.
    sigma = torch.where(prep.pbc[rows], prep.spread[rows],
                        torch.full_like(prep.spread[rows], math.inf))
    gap = (shifts.to(sigma.dtype).abs().unsqueeze(0) - sigma.unsqueeze(1)).clamp_min(0.0)
    ones = torch.ones(3, dtype=gap.dtype, device=gap.device)
    bound_sq = ((gap * gap) @ ones) * smallest.unsqueeze(1)

    # The slack keeps shifts at the boundary despite rounding.
    limit = (reach * (1.0 + 1e-9) + 1e-9).square()
    keep = bound_sq <= limit.unsqueeze(1)
    keep |= (shifts == 0).all(1)
    return keep


def _merge_shift_masks(masks: Tensor, mask_of: Tensor, m: int) -> List[Tuple[Tensor, Tensor]]:
    """Merge structures with similar sets of reachable shifts into fewer blocks.

    ``masks`` ``[U, S]`` are the distinct sets and ``mask_of`` ``[B]`` the set of each
    structure. A block takes the union of its members' sets, which only adds true images.
    Sets are merged in order of size while the extra candidates cost less than one more
    block (:data:`_BLOCK_COST`). Returns ``(shift mask [S], member mask [B])`` pairs.
    """
    sizes = masks.sum(dim=1).tolist()
    counts = torch.bincount(mask_of, minlength=masks.shape[0]).tolist()
    blocks: List[Tuple[Tensor, Tensor]] = []
    union, members, count = None, None, 0
    for u in sorted(range(masks.shape[0]), key=lambda u: sizes[u]):
        if union is not None:
            merged = union | masks[u]
            separate = m * m * (int(union.sum()) * count + sizes[u] * counts[u])
            together = m * m * int(merged.sum()) * (count + counts[u])
            if together <= separate + _BLOCK_COST:
                union, count = merged, count + counts[u]
                members |= mask_of == u
                continue
            blocks.append((union, members))
        union, members, count = masks[u], mask_of == u, counts[u]
    blocks.append((union, members))
    return blocks


def _search_group(prep: _Prepared, k_edge: Optional[int], k_dist: Optional[int],
                  tie_tol: float, radius: Tensor) -> Tuple[dict, Tensor]:
    """Run one pass for structures with the same atom count.

    Returns the results for the structures whose neighbour lists are complete, keyed by the
    caller's structure index, and a ``[B]`` tensor with the radius to retry the others with
    (NaN for completed structures).
    """
    m = prep.pos.shape[1]
    n = _shift_counts(radius, prep)
    covered_all = _covered_radius(n, prep)
    retry = torch.full_like(radius, math.nan)
    results: dict = {}

    # Structures with equal shift ranges and periodic directions are computed together.
    # Grids are merged only within one periodicity pattern, because a shift along a
    # non-periodic direction would create images that do not exist.
    keys, group_of = torch.unique(torch.cat([n, prep.pbc.long()], dim=1), dim=0,
                                  return_inverse=True)
    counts = torch.bincount(group_of, minlength=keys.shape[0]).tolist()
    keys = keys.tolist()
    plans = []
    for pattern in sorted({tuple(key[3:]) for key in keys}):
        ids = [g for g, key in enumerate(keys) if tuple(key[3:]) == pattern]
        for grid, members in _plan_shift_grids([keys[g][:3] for g in ids],
                                               [counts[g] for g in ids], m):
            plans.append((grid, [ids[g] for g in members]))

    for grid, members in plans:
        in_plan = group_of == members[0]
        for g in members[1:]:
            in_plan |= group_of == g
        rows_all = in_plan.nonzero().flatten()
        if (2 * grid[0] + 1) * (2 * grid[1] + 1) * (2 * grid[2] + 1) > _MAX_SHIFTS:
            bad = prep.index[(group_of == members[0]).nonzero()[0]].item()
            raise ValueError(
                f'Structure {bad}: the neighbour search needs more than {_MAX_SHIFTS:,} lattice '
                f'shifts (ranges {grid}): a periodic direction is far thinner than the '
                'neighbour radius. Check the lattice vectors, or set pbc=False along that '
                'direction.')
        shifts = _shift_grid(grid, prep.pos.device)
        width = m * shifts.shape[0]
        # The coverage of each structure's own range is a lower bound for the merged grid.
        covered = covered_all[rows_all]

        per_structure = max(1, _MAX_CANDIDATES // (m * width))
        centre_chunk = m if per_structure > 1 else max(1, _MAX_CANDIDATES // width)

        for start in range(0, rows_all.numel(), per_structure):
            rows = rows_all[start:start + per_structure]
            reach = covered[start:start + per_structure]
            if rows.numel() * m * width < _PRUNE_MIN_CANDIDATES:
                _search_rows(prep, rows, reach, shifts, k_edge, k_dist, tie_tol,
                             centre_chunk, results, retry)
                continue

            # Pruned to the requested radius, a structure's shifts cover exactly that
            # radius, so one whose k-th neighbour lies beyond it is retried. Structures
            # with the same set of reachable shifts are computed together.
            reach = torch.minimum(reach, radius[rows])
            masks, mask_of = torch.unique(_reachable_shifts(prep, rows, shifts, reach), dim=0,
                                          return_inverse=True)
            for mask, members in _merge_shift_masks(masks, mask_of, m):
                _search_rows(prep, rows[members], reach[members], shifts[mask], k_edge,
                             k_dist, tie_tol, centre_chunk, results, retry)
    return results, retry


def _search_rows(prep: _Prepared, rows: Tensor, reach: Tensor, shifts: Tensor,
                 k_edge: Optional[int], k_dist: Optional[int], tie_tol: float,
                 centre_chunk: int, results: dict, retry: Tensor) -> None:
    """Search one block of structures, storing complete results and retry radii in place."""
    m = prep.pos.shape[1]
    width = m * shifts.shape[0]
    k_max = max(k_edge or 0, k_dist or 0)
    if width < k_max + 1:
        # Fewer candidates than neighbours requested: widen the shell and try again.
        retry[rows] = 2.0 * _covered_or_default(reach, prep.widths[rows])
        return

    # A few candidates beyond k_edge leave room for ties without a second topk.
    depth = max(k_dist or 0, (k_edge + _TIE_MARGIN) if k_edge else 0)
    depth = min(width, depth)

    # Shifts are a lexicographic subset of a symmetric grid that always contains zero.
    zero_shift = int((shifts == 0).all(1).nonzero()[0])
    edge_chunks, dist_chunks = [], []
    needed = torch.zeros(rows.numel(), dtype=torch.float64, device=rows.device)
    for c0 in range(0, m, centre_chunk):
        centres = slice(c0, min(m, c0 + centre_chunk))
        sq = _candidate_sq_distances(prep, rows, shifts, centres, zero_shift)
        nearest_sq, nearest_index = torch.topk(sq, depth, dim=-1, largest=False, sorted=True)
        nearest = nearest_sq.sqrt()
        if k_edge:
            kth = nearest[..., k_edge - 1]
            needed = torch.maximum(needed, (kth + tie_tol).max(dim=1).values)
            edge_chunks.append((c0, _select_edges(sq, kth, tie_tol, shifts.shape[0], nearest,
                                                  nearest_index)))
        if k_dist:
            needed = torch.maximum(needed, nearest[..., k_dist - 1].max(dim=1).values)
            dist_chunks.append(nearest[..., :k_dist])

    # Complete when every needed distance lies inside the covered radius. Otherwise the
    # distances found bound the true ones, so retrying with them as the radius is complete.
    complete = needed <= reach
    failed = ~complete
    finite = torch.isfinite(needed)
    retry[rows[failed & finite]] = needed[failed & finite] * (1 + 1e-9) + 1e-9
    retry[rows[failed & ~finite]] = 2.0 * _covered_or_default(
        reach[failed & ~finite], prep.widths[rows[failed & ~finite]])

    edges = _store_edges(prep, rows, complete, shifts, edge_chunks) if k_edge else {}
    distances = torch.cat(dist_chunks, dim=1).float() if k_dist else None
    for b, (done, index) in enumerate(zip(complete.tolist(), prep.index[rows].tolist())):
        if done:
            results[index] = (edges.get(index), None if distances is None else distances[b])


def _covered_or_default(reach: Tensor, widths: Tensor) -> Tensor:
    """Return a finite radius to double when a pass found too few candidates."""
    fallback = widths.min(dim=-1).values
    return torch.where(torch.isfinite(reach), reach, fallback)


def _store_edges(prep: _Prepared, rows: Tensor, complete: Tensor, shifts: Tensor,
                 chunks: list) -> dict:
    """Convert selected candidates to edges in the original positions, keyed by structure."""
    parts = []
    for c0, (batch, centre, j, s, _) in chunks:
        parts.append((batch, centre + c0, j, s))
    batch = torch.cat([p[0] for p in parts])
    centre = torch.cat([p[1] for p in parts])
    j = torch.cat([p[2] for p in parts])
    s = torch.cat([p[3] for p in parts])

    if len(parts) > 1:
        # Chunks over centres arrive one after another; restore the order by structure.
        order = torch.sort(batch, stable=True).indices
        batch, centre, j, s = batch[order], centre[order], j[order], s[order]

    struct = rows[batch]
    # Shifts relative to the caller's (unwrapped) positions.
    shift = shifts[s] - prep.offset[struct, j] + prep.offset[struct, centre]
    lattice = torch.einsum('ea,eab->eb', shift.to(prep.pos.dtype), prep.cell[struct])
    vec = prep.pos[struct, j] + lattice - prep.pos[struct, centre]
    dist = torch.linalg.vector_norm(vec, dim=-1)

    counts = torch.bincount(batch, minlength=rows.numel()).tolist()
    pieces = zip(torch.split(torch.stack([j, centre]), counts, dim=1),
                 torch.split(dist.float(), counts), torch.split(vec.float(), counts),
                 torch.split(shift, counts), complete.tolist(), prep.index[rows].tolist())
    results = {}
    for edge_index, d_b, v_b, s_b, done, index in pieces:
        if done:
            results[index] = PeriodicNeighbors(edge_index=edge_index, edge_dist=d_b,
                                               edge_vec=v_b, edge_shift=s_b)
    return results


def _as_structure(pos: Tensor, cell: Tensor, pbc: Optional[Tensor], position: int
                  ) -> Tuple[Tensor, Tensor, Tensor]:
    """Check the shapes of one structure and return ``(pos, cell [3, 3], pbc [3])``.

    Values (NaN, inf) are checked later on the stacked tensors of each group.
    """
    pos = pos if isinstance(pos, Tensor) else torch.as_tensor(pos)
    cell = cell if isinstance(cell, Tensor) else torch.as_tensor(cell)
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f'Structure {position}: pos must have shape [num_atoms, 3], '
                         f'got {tuple(pos.shape)}.')
    if pos.shape[0] == 0:
        raise ValueError(f'Structure {position} has no atoms; give at least one.')
    if cell.shape != (3, 3):
        if cell.numel() != 9 or cell.shape[-2:] != (3, 3):
            raise ValueError(f'Structure {position}: cell must have shape [3, 3] or '
                             f'[1, 3, 3], got {tuple(cell.shape)}.')
        cell = cell.reshape(3, 3)
    if pbc is None:
        pbc = _ALL_PERIODIC
    elif not isinstance(pbc, Tensor) or pbc.dtype != torch.bool:
        pbc = torch.as_tensor(pbc, dtype=torch.bool)
    if pbc.shape != (3,):
        if pbc.numel() != 3:
            raise ValueError(f'Structure {position}: pbc must have 3 entries, got '
                             f'{pbc.numel()}.')
        pbc = pbc.reshape(3)
    return pos, cell, pbc


def _check_k(k: int, name: str = 'k') -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f'{name} must be a positive integer, got {k!r}.')


def _run_search(structures: Sequence[StructureTuple], k_edge: Optional[int],
                k_dist: Optional[int], tie_tol: float) -> list:
    """Search all structures, grouping those with the same atom count.

    Returns ``(PeriodicNeighbors or None, distances [m, k_dist] or None)`` per structure.
    """
    for value, name in ((k_edge, 'k'), (k_dist, 'k_dist')):
        if value is not None:
            _check_k(value, name)
    k = max(k_edge or 0, k_dist or 0)
    if not 0 <= tie_tol < math.inf:
        raise ValueError(f'tie_tol must be a finite non-negative distance in Å, got {tie_tol!r}.')

    converted = [_as_structure(p, c, b, i) for i, (p, c, b) in enumerate(structures)]
    if converted:
        any_periodic = torch.stack([pbc.cpu() for _, _, pbc in converted]).any(dim=1).tolist()
        for i, ((pos, _, _), periodic) in enumerate(zip(converted, any_periodic)):
            if not periodic and pos.shape[0] - 1 < k:
                raise ValueError(
                    f'Structure {i} is not periodic in any direction and has {pos.shape[0]} '
                    f'atoms, so it has fewer than k={k} neighbours. Lower k or set pbc=True.')

    if _use_compiled(converted):
        return _run_compiled(converted, k_edge, k_dist, tie_tol)

    by_size: dict = {}
    for i, (pos, _, _) in enumerate(converted):
        by_size.setdefault(pos.shape[0], []).append(i)

    results: dict = {}
    for members in by_size.values():
        # Everything runs on the device of the first structure's positions.
        pos = torch.stack([converted[i][0] for i in members]).double()
        device = pos.device
        index = torch.tensor(members, device=device)
        cell = torch.stack([converted[i][1].to(device) for i in members]).double()
        pbc = torch.stack([converted[i][2].to(device) for i in members])
        finite = torch.isfinite(pos).flatten(1).all(1) & torch.isfinite(cell).flatten(1).all(1)
        if not bool(finite.all()):
            bad = members[int((~finite).nonzero()[0])]
            raise ValueError(f'Structure {bad}: pos or cell contains NaN or inf.')
        prep = _prepare(index, pos, cell, pbc)
        radius = _initial_radius(prep, k)
        todo = torch.arange(len(members), device=device)
        while todo.numel() > 0:
            sub = _Prepared(**{f: getattr(prep, f)[todo] for f in prep.__dataclass_fields__})
            found, retry = _search_group(sub, k_edge, k_dist, tie_tol, radius[todo])
            results.update(found)
            again = torch.isfinite(retry)
            radius[todo[again]] = retry[again]
            todo = todo[again]
    return [results[i] for i in range(len(structures))]


def _use_compiled(converted: list) -> bool:
    """Use the compiled CPU kernel unless the positions are on another device or it is off.

    ``PYG_WPDD_SEARCH=torch`` selects the vectorised PyTorch search on CPU too. Only the first
    structure is looked at: both searches stack all structures, which fails for mixed devices.
    """
    if os.environ.get('PYG_WPDD_SEARCH', 'auto') == 'torch':
        return False
    if not converted or converted[0][0].device.type != 'cpu':
        return False
    return _compiled_search() is not None


@functools.lru_cache(maxsize=1)
def _compiled_search():
    try:
        from . import _compiled_search as module  # noqa: PLC0415
    except ImportError:  # numba is missing: the PyTorch search serves CPU too.
        return None
    return module


def _run_compiled(converted: list, k_edge: Optional[int], k_dist: Optional[int],
                  tie_tol: float) -> list:
    """Search all structures with the compiled CPU kernel; same results as the PyTorch one."""
    if not converted:
        return []
    counts = [pos.shape[0] for pos, _, _ in converted]
    # The kernel takes NumPy arrays, which cannot carry autograd history.
    pos = torch.cat([p.detach() for p, _, _ in converted]).to(torch.float64)
    # Cells and pbc may sit on another device than the positions, as in the PyTorch search.
    cell = torch.stack([c.detach().cpu() for _, c, _ in converted]).to(torch.float64)
    pbc = torch.stack([b.cpu() for _, _, b in converted])
    if not (bool(torch.isfinite(pos).all()) and bool(torch.isfinite(cell).all())):
        atom_finite = torch.isfinite(pos).all(dim=1)
        finite = torch.isfinite(cell).flatten(1).all(1)
        finite &= torch.stack([part.all() for part in torch.split(atom_finite, counts)])
        raise ValueError(f'Structure {int((~finite).nonzero()[0])}: pos or cell contains '
                         'NaN or inf.')

    full = cell
    partial = (~pbc).any(dim=1)
    if bool(partial.any()):
        full = cell.clone()
        for b in partial.nonzero().flatten().tolist():
            full[b] = _complete_cell(cell[b], pbc[b])
    volume = torch.linalg.det(full).abs()
    _check_volumes(volume, torch.arange(len(counts)))
    eigenvalues = torch.linalg.eigvalsh(full @ full.transpose(1, 2))
    # eigvalsh is backward stable: lowering by 1e-12 of the largest bounds its error.
    smallest = (eigenvalues[:, 0] - 1e-12 * eigenvalues[:, -1]).clamp_min(0.0)
    starts = torch.zeros(len(counts) + 1, dtype=torch.long)
    starts[1:] = torch.tensor(counts).cumsum(0)

    edge_j, edge_i, edge_shift, edge_vec, edge_dist, edge_counts, distances = \
        _compiled_search().search_structures(
            pos.numpy(), starts.numpy(), cell.numpy(), full.numpy(),
            torch.linalg.inv(full).numpy(), pbc.numpy(), perpendicular_widths(full).numpy(),
            volume.numpy(), smallest.numpy(), k_edge or 0, k_dist or 0, float(tie_tol),
            SORT_QUANTUM)

    per_structure_distances = [None] * len(counts)
    if k_dist:
        per_structure_distances = torch.split(torch.from_numpy(distances).float(), counts)
    if not k_edge:
        return [(None, d) for d in per_structure_distances]
    sizes = edge_counts.tolist()
    edge_index = torch.split(torch.from_numpy(np.stack([edge_j, edge_i])), sizes, dim=1)
    edge_dist = torch.split(torch.from_numpy(edge_dist).float(), sizes)
    edge_vec = torch.split(torch.from_numpy(edge_vec).float(), sizes)
    edge_shift = torch.split(torch.from_numpy(edge_shift), sizes)
    results = [(PeriodicNeighbors(edge_index=e, edge_dist=d, edge_vec=v, edge_shift=s), dist)
               for e, d, v, s, dist in zip(edge_index, edge_dist, edge_vec, edge_shift,
                                           per_structure_distances)]

    # Edge vectors from the caller's tensors let gradients reach pos and cell, as in the
    # PyTorch search. NOTE: the distance tables of this engine carry no gradient.
    for (edges, _), (p, c, _) in zip(results, converted):
        if p.requires_grad or c.requires_grad:
            j, i = edges.edge_index
            vec = p.double()[j] + edges.edge_shift.double() @ c.double() - p.double()[i]
            edges.edge_vec = vec.float()
            edges.edge_dist = torch.linalg.vector_norm(vec, dim=-1).float()
    return results


def periodic_knn(pos: Tensor, cell: Tensor, pbc: Optional[Tensor] = None, k: int = 16,
                 tie_tol: float = DEFAULT_TIE_TOL) -> PeriodicNeighbors:
    r"""Find the ``k`` nearest neighbours of every atom of a periodic crystal.

    Every periodic image is its own neighbour (a multigraph), images of the atom itself count,
    and only the zero-distance self pair is excluded. All neighbours tied with the k-th
    distance (within ``tie_tol``) are kept, so an atom can have more than ``k`` edges.

    Args:
        pos (torch.Tensor): Cartesian positions in Å, ``[num_atoms, 3]``.
        cell (torch.Tensor): Lattice vectors as rows, ``[3, 3]`` or ``[1, 3, 3]``.
        pbc (torch.Tensor, optional): Periodic directions, ``[3]`` or ``[1, 3]`` bool.
            (default: all periodic)
        k (int, optional): Number of neighbours per atom. (default: :obj:`16`)
        tie_tol (float, optional): Neighbours within ``d_k + tie_tol`` Å are kept.
            Keep it above rounding (1e-9 Å or more): with ``tie_tol=0`` the PyTorch search
            can split exact ties that rounding made unequal. (default: :obj:`1e-6`)

    Returns:
        PeriodicNeighbors: edges sorted by centre, distance, neighbour and shift.

    .. note::
        The work grows as :math:`m^2 S` for :math:`m` atoms and :math:`S` lattice shifts,
        because every atom is compared with every image (no cell list). Cells of a few
        hundred atoms take well under a second; a 2,000-atom cubic cell took about 5 s
        with k=16 on one core of a shared, loaded 2-core CPU.

    Raises:
        ValueError: for bad shapes, a singular cell, or a non-periodic structure with fewer
            than ``k + 1`` atoms.
    """
    return _run_search([(pos, cell, pbc)], k, None, tie_tol)[0][0]


def periodic_knn_batch(structures: Sequence[StructureTuple], k: int = 16,
                       tie_tol: float = DEFAULT_TIE_TOL) -> List[PeriodicNeighbors]:
    r"""Run :func:`periodic_knn` on many structures, vectorised over structures.

    Structures with the same number of atoms and the same shift range are computed in one set
    of tensor operations, which is much faster than a Python loop for small cells. The
    returned tensors can be views into buffers shared by several structures.

    Args:
        structures (sequence of tuple): ``(pos, cell, pbc)`` per structure, ``pbc`` may be
            :obj:`None`.
        k (int, optional): Number of neighbours per atom. (default: :obj:`16`)
        tie_tol (float, optional): Tie tolerance in Å. (default: :obj:`1e-6`)

    Returns:
        list of PeriodicNeighbors: one per structure, in input order.
    """
    return [edges for edges, _ in _run_search(structures, k, None, tie_tol)]


def periodic_knn_and_distances_batch(structures: Sequence[StructureTuple], k: int = 16,
                                     k_dist: int = 50, tie_tol: float = DEFAULT_TIE_TOL
                                     ) -> List[Tuple[PeriodicNeighbors, Tensor]]:
    r"""Return the ``k``-NN edges and the ``k_dist`` nearest distances in one search.

    Equals ``zip(periodic_knn_batch(structures, k), periodic_knn_distances_batch(
    structures, k_dist))`` at about the cost of the larger search alone.

    Returns:
        list of tuple: ``(PeriodicNeighbors, distances [num_atoms, k_dist])`` per structure.
    """
    return _run_search(structures, k, k_dist, tie_tol)


def periodic_knn_distances(pos: Tensor, cell: Tensor, pbc: Optional[Tensor] = None,
                           k: int = 50) -> Tensor:
    r"""Return the sorted distances to the ``k`` nearest neighbours, ``[num_atoms, k]``.

    This is row :math:`i` of the pairwise distance distribution without its weight. Ties at
    the k-th distance do not change these values, so none are added.

    Args:
        pos (torch.Tensor): Cartesian positions in Å, ``[num_atoms, 3]``.
        cell (torch.Tensor): Lattice vectors as rows, ``[3, 3]`` or ``[1, 3, 3]``.
        pbc (torch.Tensor, optional): Periodic directions, ``[3]`` bool. (default: all)
        k (int, optional): Number of neighbours. (default: :obj:`50`)
    """
    return _run_search([(pos, cell, pbc)], None, k, 0.0)[0][1]


def periodic_knn_distances_batch(structures: Sequence[StructureTuple], k: int = 50
                                 ) -> List[Tensor]:
    """Run :func:`periodic_knn_distances` on many structures, vectorised over structures."""
    return [distances for _, distances in _run_search(structures, None, k, 0.0)]


def minimum_image_distances(pos: Tensor, cell: Tensor, pbc: Optional[Tensor] = None) -> Tensor:
    r"""Compute :math:`d_{\min}(i, j) = \min_{\mathbf{s}} \lVert \mathbf{p}_j +
    \mathbf{s}\mathbf{L} - \mathbf{p}_i \rVert` over all lattice shifts.

    The minimum is exact for any cell shape: the shortest wrapped displacement bounds every
    minimum, and all shifts within that bound are enumerated. Rounding fractional differences
    alone is wrong for skewed cells.

    Args:
        pos (torch.Tensor): Cartesian positions in Å, ``[num_atoms, 3]``.
        cell (torch.Tensor): Lattice vectors as rows, ``[3, 3]`` or ``[1, 3, 3]``.
        pbc (torch.Tensor, optional): Periodic directions, ``[3]`` bool. (default: all)

    Returns:
        torch.Tensor: ``[num_atoms, num_atoms]`` float64, zero on the diagonal.
    """
    pos, cell, pbc = _as_structure(pos, cell, pbc, 0)
    pos, cell = pos.double(), cell.double()
    cell, pbc = cell.to(pos.device), pbc.to(pos.device)
    prep = _prepare(torch.tensor([0], device=pos.device), pos[None], cell[None], pbc[None])
    wrapped = prep.pos_wrapped[0]
    full = prep.cell_full[0]

    # Wrap fractional differences into [-0.5, 0.5]: the result bounds each minimum.
    frac = torch.linalg.solve(full.T, wrapped.T).T
    diff = frac.unsqueeze(0) - frac.unsqueeze(1)
    diff = torch.where(pbc, diff - torch.round(diff), diff)
    bound = torch.linalg.vector_norm(diff @ full, dim=-1).max()

    # |df + n| <= r / h with |df| <= 1/2 gives |n| <= r / h + 1/2.
    n = torch.ceil(bound / prep.widths[0] + 0.5).long()
    n = torch.where(pbc, n, torch.zeros_like(n))
    shifts = _shift_grid(n.tolist(), pos.device).to(pos.dtype) @ full

    m = pos.shape[0]
    best = torch.full((m, m), math.inf, dtype=pos.dtype, device=pos.device)
    chunk = max(1, _MAX_CANDIDATES // max(1, m * shifts.shape[0]))
    for start in range(0, m, chunk):
        centre = wrapped[start:start + chunk]
        vec = (wrapped.unsqueeze(1) + shifts.unsqueeze(0)).unsqueeze(0) - centre[:, None, None]
        best[start:start + chunk] = torch.linalg.vector_norm(vec, dim=-1).min(dim=-1).values
    best.fill_diagonal_(0.0)
    return best
