"""Small crystals and a brute-force periodic graph builder for the model tests.

The builder enumerates lattice shifts in a fixed cube, which is exact for the compact cells
made here (all cell widths above 3 Å, k at most 16 neighbours within 2 shells).
"""
import torch
from torch_geometric.data import Data

K_EDGE = 8
K_WPDD = 12


def random_crystal(num_atoms: int, seed: int, min_dist: float = 1.2):
    """Returns (pos [n, 3], cell [3, 3], z [n]) of a random, slightly skewed cell."""
    gen = torch.Generator().manual_seed(seed)
    cell = torch.diag(torch.tensor([4.0, 4.5, 5.0], dtype=torch.float64))
    cell = cell + 0.4 * torch.rand(3, 3, generator=gen, dtype=torch.float64)
    z = torch.randint(1, 40, (num_atoms,), generator=gen)

    frac = []
    while len(frac) < num_atoms:
        candidate = torch.rand(3, generator=gen, dtype=torch.float64)
        ok = True
        for other in frac:
            diff = candidate - other
            diff = diff - torch.round(diff)
            if (diff @ cell).norm() < min_dist:
                ok = False
        if ok:
            frac.append(candidate)
    pos = torch.stack(frac) @ cell
    return pos, cell, z


def build_graph(pos, cell, z, k_edge: int = K_EDGE, k_wpdd: int = K_WPDD, y=None,
                reach: int = 2) -> Data:
    """Builds a Data object that follows the pyg_wpdd data contract by brute force."""
    pos = pos.to(torch.float64)
    cell = cell.to(torch.float64)
    n = pos.size(0)

    r = torch.arange(-reach, reach + 1)
    shifts = torch.cartesian_prod(r, r, r)
    offsets = shifts.to(torch.float64) @ cell

    # vec[i, j, s] = pos[j] + offset[s] - pos[i]
    vec = pos[None, :, None, :] + offsets[None, None, :, :] - pos[:, None, None, :]
    dist = vec.norm(dim=-1)

    src, dst, dists, vecs, shift_list, wpdd_rows = [], [], [], [], [], []
    z_mean = z.to(torch.float64).mean()
    for i in range(n):
        d = dist[i].reshape(-1)
        order = torch.argsort(d, stable=True)
        order = order[d[order] > 1e-8]
        kth = d[order[k_edge - 1]]
        chosen = order[d[order] <= kth + 1e-6]
        for flat in chosen.tolist():
            j, s = divmod(flat, shifts.size(0))
            src.append(j)
            dst.append(i)
            dists.append(dist[i, j, s])
            vecs.append(vec[i, j, s])
            shift_list.append(shifts[s])
        weight = z[i].to(torch.float64) / z_mean
        wpdd_rows.append(torch.cat([weight.view(1), d[order[:k_wpdd]]]))

    data = Data(
        pos=pos.float(),
        cell=cell.float().unsqueeze(0),
        z=z.long(),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        edge_index=torch.tensor([src, dst], dtype=torch.long),
        edge_dist=torch.stack(dists).float(),
        edge_vec=torch.stack(vecs).float(),
        edge_shift=torch.stack(shift_list).long(),
        wpdd=torch.stack(wpdd_rows).float(),
    )
    if y is not None:
        data.y = torch.tensor([[float(y)]])
    return data


def add_updd(data: Data, reach: int = 2) -> Data:
    """Adds the dense UPDD matrix U_ij = 1 / d_min(i, j) as updd_index/updd_weight."""
    pos = data.pos.double()
    cell = data.cell[0].double()
    r = torch.arange(-reach, reach + 1)
    offsets = torch.cartesian_prod(r, r, r).double() @ cell
    vec = pos[None, :, None, :] + offsets[None, None] - pos[:, None, None, :]
    d_min = vec.norm(dim=-1).min(dim=-1).values

    n = pos.size(0)
    row, col = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
    mask = row != col
    data.updd_index = torch.stack([col[mask], row[mask]])
    data.updd_weight = (1.0 / d_min[mask]).float()
    return data


def random_graph(num_atoms: int, seed: int, **kwargs) -> Data:
    pos, cell, z = random_crystal(num_atoms, seed)
    return build_graph(pos, cell, z, y=seed * 0.1, **kwargs)
