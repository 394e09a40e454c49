from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, ModuleList
from torch_geometric.data import Data
from torch_geometric.nn import CGConv, global_mean_pool

from ._inputs import check_attributes
from .atom_embedding import AtomEmbedding
from .rbf import GaussianRBF


class CGCNN(torch.nn.Module):
    r"""A crystal graph convolutional network in the style of `"Crystal Graph Convolutional
    Neural Networks for an Accurate and Interpretable Prediction of Material Properties"
    <https://doi.org/10.1103/PhysRevLett.120.145301>`_ (Xie and Grossman, PRL 120, 145301,
    2018), built from :class:`torch_geometric.nn.conv.CGConv`, as a baseline that takes the
    same batches as :class:`WPDDFormer` and ignores the WPDD.

    .. math::
        \mathbf{h}_i^{(0)} = \mathrm{Embed}(Z_i), \qquad
        \mathbf{e}_{ij} = \mathrm{RBF}(d_{ij})

        \mathbf{h}_i' = \mathrm{softplus}\Big(\mathbf{h}_i + \mathrm{BN}\Big(\sum_{j}
        \sigma(\mathbf{W}_f\mathbf{z}_{ij} + \mathbf{b}_f) \odot
        \mathrm{softplus}(\mathbf{W}_s\mathbf{z}_{ij} + \mathbf{b}_s)\Big)\Big), \quad
        \mathbf{z}_{ij} = [\mathbf{h}_i, \mathbf{h}_j, \mathbf{e}_{ij}]

        \hat{y} = \mathbf{W}_y\,\mathrm{softplus}\big(\mathbf{W}_g\,\tfrac{1}{|V|}
        \textstyle\sum_i \mathbf{h}_i\big)

    The defaults follow the CGCNN paper: width 64, three convolutions, a 128-wide hidden
    layer, and 41 Gaussians of the distance on :math:`[0, 8]` Å.

    Args:
        channels (int): Node width. (default: :obj:`64`)
        out_channels (int): Number of predicted targets. (default: :obj:`1`)
        num_layers (int): Number of :class:`CGConv` layers. (default: :obj:`3`)
        hidden_channels (int): Width of the layer after pooling. (default: :obj:`128`)
        num_gaussians (int): Size of the RBF basis. (default: :obj:`41`)
        rbf_start (float): First RBF centre. (default: :obj:`0.0`)
        rbf_stop (float): Last RBF centre. (default: :obj:`8.0`)
        rbf_inverse (bool): Expand :math:`-1/d` instead of :math:`d`, as
            :class:`WPDDFormer` does (set :obj:`rbf_start` and :obj:`rbf_stop` to match).
            (default: :obj:`False`)
        node_features (str): :obj:`'cgcnn'` or :obj:`'embedding'`. (default: :obj:`'cgcnn'`)
        max_z (int): Largest atomic number accepted. (default: :obj:`100`)
        atom_table (str or Path, optional): Element table replacing the CGCNN one.
            (default: :obj:`None`)

    Shapes:
        - **input:** a :class:`~torch_geometric.data.Data` or
          :class:`~torch_geometric.data.Batch` with :obj:`z` :math:`[num\_atoms]`,
          :obj:`edge_index` :math:`[2, num\_edges]`, :obj:`edge_dist` :math:`[num\_edges]` and
          optional :obj:`batch` :math:`[num\_atoms]`
        - **output:** :math:`[num\_graphs, out\_channels]`; :meth:`embed` returns node
          embeddings :math:`[num\_atoms, channels]`
    """
    def __init__(
        self,
        channels: int = 64,
        out_channels: int = 1,
        num_layers: int = 3,
        hidden_channels: int = 128,
        num_gaussians: int = 41,
        rbf_start: float = 0.0,
        rbf_stop: float = 8.0,
        rbf_inverse: bool = False,
        node_features: str = 'cgcnn',
        max_z: int = 100,
        atom_table: Optional[Union[str, Path]] = None,
    ):
        super().__init__()
        for name, value in [('channels', channels), ('out_channels', out_channels),
                            ('num_layers', num_layers), ('hidden_channels', hidden_channels)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{name}' must be a positive integer (got {value!r})")

        self.channels = channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.hidden_channels = hidden_channels

        self.atom_embedding = AtomEmbedding(channels, node_features, max_z, atom_table)
        self.rbf = GaussianRBF(rbf_start, rbf_stop, num_gaussians, inverse=rbf_inverse)
        self.convs = ModuleList([
            CGConv(channels, dim=num_gaussians, aggr='add', batch_norm=True)
            for _ in range(num_layers)
        ])
        self.lin_hidden = Linear(channels, hidden_channels)
        self.lin_out = Linear(hidden_channels, out_channels)

        self.reset_parameters()

    def reset_parameters(self):
        self.atom_embedding.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        self.lin_hidden.reset_parameters()
        self.lin_out.reset_parameters()

    def embed(self, data: Data) -> Tensor:
        r"""Computes node embeddings :math:`[num\_atoms, channels]` before pooling."""
        check_attributes(data, ['z', 'edge_index', 'edge_dist'], self.__class__.__name__)

        h = self.atom_embedding(data.z)
        edge_attr = self.rbf(data.edge_dist.to(h.dtype))
        for conv in self.convs:
            # CGConv adds the residual; CGCNN applies softplus after it.
            h = F.softplus(conv(h, data.edge_index, edge_attr))
        return h

    def forward(self, data: Data) -> Tensor:
        h = self.embed(data)

        batch = getattr(data, 'batch', None)
        g = global_mean_pool(h, batch, size=getattr(data, 'num_graphs', None))
        return self.lin_out(F.softplus(self.lin_hidden(g)))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(channels={self.channels}, '
                f'out_channels={self.out_channels}, num_layers={self.num_layers}, '
                f'hidden_channels={self.hidden_channels})')
