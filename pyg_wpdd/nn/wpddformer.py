from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, ModuleList, Sequential, SiLU
from torch_geometric.data import Data
from torch_geometric.nn import global_mean_pool

from ._inputs import check_attributes
from .atom_embedding import AtomEmbedding
from .attention_conv import SymmetricAttentionConv
from .pdd_layer import GatedPDDLayer
from .rbf import GaussianRBF
from .updd_mixing import UPDDMixing


class WPDDFormer(torch.nn.Module):
    r"""The pairwise distance distribution graph transformer from `"PDDFormer: Pairwise
    Distance Distribution Graph Transformer for Crystal Material Property Prediction"
    <https://arxiv.org/abs/2408.12984>`_ (Shen et al., IJCAI 2025), which predicts a crystal
    property from a periodic k-nearest-neighbour graph and the weighted pairwise distance
    distribution (WPDD) of each atom.

    With :math:`L` attention layers (:class:`SymmetricAttentionConv`) and :math:`L - 1` gated
    PDD layers (:class:`GatedPDDLayer`) between them:

    .. math::
        \mathbf{H}^{(0)} = \mathrm{Embed}(Z), \quad
        \mathbf{P}^{(0)} = \mathbf{W}_P\,\mathrm{WPDD}, \quad
        \mathbf{E} = \mathrm{MLP}_e(\mathrm{RBF}(-1/d))

        \mathbf{H} \leftarrow \mathrm{Attn}_1(\mathbf{H}, \mathbf{E}), \quad
        (\mathbf{H}, \mathbf{P}) \leftarrow \mathrm{PDD}_1(\mathbf{H}, \mathbf{P}), \quad
        \mathbf{H} \leftarrow \mathrm{Attn}_2(\mathbf{H}, \mathbf{E}), \quad \dots

        \mathbf{g} = \frac{1}{|V|}\sum_{i \in V} \mathbf{h}_i, \qquad
        \hat{y} = \mathbf{W}_y\,\mathrm{SiLU}(\mathbf{g} + \mathrm{MLP}_r(\mathbf{g}))

    The model reads only interatomic distances and atomic numbers, so its output is invariant
    under rotations, reflections and translations of the crystal and under atom permutations.
    With mean pooling and the cell-invariant WPDD weighting :math:`w_i = Z_i / \bar{Z}` it is
    also invariant under the choice of supercell, which the paper weighting
    :math:`Z_i / \sum_j Z_j` and the UPDD mixing (:obj:`use_updd=True`) break.

    .. note::
        At the defaults the model has 3.59 M parameters, fewer than the roughly 4.5 M quoted
        for PDDFormer. The widths of the key and message MLPs here are a reconstruction from
        the operators above and may differ from the authors' code.

    .. note::
        The batch norms make outputs depend on the other crystals of a batch in training mode.
        Evaluate in :obj:`eval()` mode. A single crystal with one atom cannot go through a
        training step alone, because the node batch norm needs more than one value per channel.
        Under :class:`~torch.nn.parallel.DistributedDataParallel` every parameter is used in
        every step (the UPDD layers exist only when :obj:`use_updd=True`), so
        :obj:`find_unused_parameters` can stay :obj:`False`. Convert the batch norms with
        :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` if per-GPU batches are small.

    Args:
        channels (int): Hidden width :math:`C`. (default: :obj:`256`)
        out_channels (int): Number of predicted targets. (default: :obj:`1`)
        num_layers (int): Number of attention layers :math:`L`. (default: :obj:`3`)
        heads (int): Attention heads per layer. (default: :obj:`1`)
        wpdd_dim (int): Width of the WPDD rows, :math:`k + 1` for :math:`k` neighbour
            distances plus the weight column. (default: :obj:`51`)
        num_gaussians (int): Size of the RBF basis for :math:`-1/d`. (default: :obj:`256`)
        rbf_start (float): First RBF centre. (default: :obj:`-6.0`)
        rbf_stop (float): Last RBF centre. (default: :obj:`0.0`)
        node_features (str): :obj:`'cgcnn'` for the 92-value CGCNN element table or
            :obj:`'embedding'` for a learned vector per atomic number. (default: :obj:`'cgcnn'`)
        max_z (int): Largest atomic number accepted. (default: :obj:`100`)
        atom_table (str or Path, optional): Element table replacing the CGCNN one.
            (default: :obj:`None`)
        use_updd (bool): If :obj:`True`, mix node features with the UPDD matrix
            (:class:`UPDDMixing`) after each PDD layer; the data must then carry
            :obj:`updd_index` and :obj:`updd_weight`. (default: :obj:`False`)
        dropout (float): Dropout on the PDD gates and in the readout. (default: :obj:`0.0`)

    Shapes:
        - **input:** a :class:`~torch_geometric.data.Data` or
          :class:`~torch_geometric.data.Batch` with :obj:`z` :math:`[num\_atoms]`,
          :obj:`edge_index` :math:`[2, num\_edges]`, :obj:`edge_dist` :math:`[num\_edges]`,
          :obj:`wpdd` :math:`[num\_atoms, wpdd\_dim]`, optional :obj:`batch`
          :math:`[num\_atoms]`, and with :obj:`use_updd=True` also :obj:`updd_index`
          :math:`[2, num\_pairs]` and :obj:`updd_weight` :math:`[num\_pairs]`
        - **output:** :math:`[num\_graphs, out\_channels]`; :meth:`embed` returns node
          embeddings :math:`[num\_atoms, C]`
    """
    def __init__(
        self,
        channels: int = 256,
        out_channels: int = 1,
        num_layers: int = 3,
        heads: int = 1,
        wpdd_dim: int = 51,
        num_gaussians: int = 256,
        rbf_start: float = -6.0,
        rbf_stop: float = 0.0,
        node_features: str = 'cgcnn',
        max_z: int = 100,
        atom_table: Optional[Union[str, Path]] = None,
        use_updd: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in [('channels', channels), ('out_channels', out_channels),
                            ('num_layers', num_layers), ('heads', heads),
                            ('wpdd_dim', wpdd_dim)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{name}' must be a positive integer (got {value!r})")

        self.channels = channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.heads = heads
        self.wpdd_dim = wpdd_dim
        self.use_updd = use_updd
        self.dropout = dropout

        self.atom_embedding = AtomEmbedding(channels, node_features, max_z, atom_table)
        self.rbf = GaussianRBF(rbf_start, rbf_stop, num_gaussians, inverse=True)
        self.edge_mlp = Sequential(
            Linear(num_gaussians, channels),
            SiLU(),
            Linear(channels, channels),
        )
        self.lin_pdd = Linear(wpdd_dim, channels)

        self.convs = ModuleList([
            SymmetricAttentionConv(channels, edge_dim=channels, heads=heads)
            for _ in range(num_layers)
        ])
        self.pdd_layers = ModuleList([
            GatedPDDLayer(channels, dropout=dropout) for _ in range(num_layers - 1)
        ])
        self.updd_layers = ModuleList([
            UPDDMixing(channels) for _ in range(num_layers - 1)
        ]) if use_updd else None

        self.readout_mlp = Sequential(
            Linear(channels, channels),
            SiLU(),
            Linear(channels, channels),
        )
        self.lin_out = Linear(channels, out_channels)

        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def embed(self, data: Data) -> Tensor:
        r"""Computes node embeddings :math:`[num\_atoms, C]` before pooling."""
        needed = ['z', 'edge_index', 'edge_dist', 'wpdd']
        if self.use_updd:
            needed += ['updd_index', 'updd_weight']
        check_attributes(data, needed, self.__class__.__name__)
        if data.wpdd.dim() != 2 or data.wpdd.size(-1) != self.wpdd_dim:
            raise ValueError(f"'wpdd' has shape {list(data.wpdd.shape)} but the model expects "
                             f"[num_atoms, {self.wpdd_dim}]: build the WPDD with "
                             f"k={self.wpdd_dim - 1} or set wpdd_dim={data.wpdd.size(-1)}")

        h = self.atom_embedding(data.z)
        p = self.lin_pdd(data.wpdd.to(h.dtype))
        edge_attr = self.edge_mlp(self.rbf(data.edge_dist.to(h.dtype)))

        h = self.convs[0](h, data.edge_index, edge_attr)
        for i, conv in enumerate(self.convs[1:]):
            h, p = self.pdd_layers[i](h, p)
            if self.updd_layers is not None:
                h = self.updd_layers[i](h, data.updd_index, data.updd_weight)
            h = conv(h, data.edge_index, edge_attr)
        return h

    def forward(self, data: Data) -> Tensor:
        h = self.embed(data)

        batch = getattr(data, 'batch', None)
        g = global_mean_pool(h, batch, size=getattr(data, 'num_graphs', None))

        g = g + self.readout_mlp(g)
        g = F.dropout(F.silu(g), p=self.dropout, training=self.training)
        return self.lin_out(g)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(channels={self.channels}, '
                f'out_channels={self.out_channels}, num_layers={self.num_layers}, '
                f'heads={self.heads}, wpdd_dim={self.wpdd_dim}, use_updd={self.use_updd})')
