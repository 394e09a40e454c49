import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, LayerNorm, Linear, Sequential, SiLU
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj


class SymmetricAttentionConv(MessagePassing):
    r"""The crystal graph attention layer of PDDFormer, from `"PDDFormer: Pairwise Distance
    Distribution Graph Transformer for Crystal Material Property Prediction"
    <https://arxiv.org/abs/2408.12984>`_ (Shen et al., IJCAI 2025), which follows Matformer.

    For an edge :math:`j \to i` with embedding :math:`\mathbf{e}_{ij}`:

    .. math::
        \mathbf{q} = \mathbf{W}_q\mathbf{h}, \quad \mathbf{k} = \mathbf{W}_k\mathbf{h},
        \quad \mathbf{v} = \mathbf{W}_v\mathbf{h}, \quad
        \tilde{\mathbf{k}}_{j} = \mathrm{MLP}_k([\mathbf{k}_j, \mathbf{e}_{ij}])

        \boldsymbol{\alpha}_{ij} = \frac{\mathbf{q}_i \odot \tilde{\mathbf{k}}_j +
        \mathbf{q}_j \odot \tilde{\mathbf{k}}_i}{\sqrt{C}}

        \mathbf{m}_{ij} = \sigma(\mathrm{BN}(\boldsymbol{\alpha}_{ij})) \odot
        \mathrm{MLP}_m([\mathbf{v}_i, \mathbf{v}_j, \mathbf{e}_{ij}]) \odot
        \sigma(\mathrm{LN}(\mathbf{W}_g[\mathbf{v}_i, \mathbf{v}_j, \mathbf{e}_{ij}]))

        \mathbf{h}'_i = \mathrm{SiLU}\Big(\mathbf{h}_i + \mathrm{BN}\big(\mathbf{W}_o
        \sum_{j \in \mathcal{N}(i)} \mathbf{m}_{ij}\big)\Big)

    The attention is element-wise (one weight per channel) and gated by a sigmoid instead of a
    softmax, so a node's update is not normalised over its neighbours. Because one
    :math:`\mathrm{MLP}_k` serves both ends, :math:`\boldsymbol{\alpha}_{ij} =
    \boldsymbol{\alpha}_{ji}` whenever :math:`\mathbf{e}_{ij} = \mathbf{e}_{ji}`, as for
    distance-based edge features. With :obj:`heads > 1` the products are taken per head of
    width :obj:`channels`, and :math:`\mathbf{W}_o` maps the concatenated heads back to
    :obj:`channels`.

    .. note::
        The batch norms make the output depend on the other graphs in a batch in training
        mode. Compare batched and single-graph outputs in :obj:`eval()` mode.

    Args:
        channels (int): Node width :math:`C` (input and output).
        edge_dim (int, optional): Edge embedding width; :obj:`channels` if :obj:`None`.
            (default: :obj:`None`)
        heads (int): Number of attention heads. (default: :obj:`1`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing` (aggregation defaults to
            :obj:`'add'`).

    Shapes:
        - **input:** node features :math:`[num\_atoms, C]`, edge indices
          :math:`[2, num\_edges]` (row 0 source :math:`j`, row 1 target :math:`i`),
          edge embeddings :math:`[num\_edges, edge\_dim]`
        - **output:** node features :math:`[num\_atoms, C]`
    """
    def __init__(self, channels: int, edge_dim: int = None, heads: int = 1, **kwargs):
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)
        if channels < 1:
            raise ValueError(f"'channels' must be positive (got {channels})")
        if heads < 1:
            raise ValueError(f"'heads' must be positive (got {heads})")

        self.channels = channels
        self.edge_dim = channels if edge_dim is None else edge_dim
        self.heads = heads
        width = heads * channels

        self.lin_query = Linear(channels, width)
        self.lin_key = Linear(channels, width)
        self.lin_value = Linear(channels, width)
        self.key_mlp = Sequential(
            Linear(width + self.edge_dim, width),
            SiLU(),
            Linear(width, width),
        )
        self.attention_norm = BatchNorm1d(width)

        self.message_mlp = Sequential(
            Linear(2 * width + self.edge_dim, width),
            SiLU(),
            Linear(width, width),
        )
        self.lin_gate = Linear(2 * width + self.edge_dim, width)
        self.gate_norm = LayerNorm(width)

        self.lin_out = Linear(width, channels)
        self.out_norm = BatchNorm1d(channels)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Adj, edge_attr: Tensor) -> Tensor:
        query = self.lin_query(x)
        key = self.lin_key(x)
        value = self.lin_value(x)

        # propagate_type: (query: Tensor, key: Tensor, value: Tensor, edge_attr: Tensor)
        out = self.propagate(edge_index, query=query, key=key, value=value,
                             edge_attr=edge_attr)

        out = self.out_norm(self.lin_out(out))
        return F.silu(x + out)

    def message(self, query_i: Tensor, query_j: Tensor, key_i: Tensor, key_j: Tensor,
                value_i: Tensor, value_j: Tensor, edge_attr: Tensor) -> Tensor:
        key_j = self.key_mlp(torch.cat([key_j, edge_attr], dim=-1))
        key_i = self.key_mlp(torch.cat([key_i, edge_attr], dim=-1))
        alpha = (query_i * key_j + query_j * key_i) / math.sqrt(self.channels)
        alpha = torch.sigmoid(self.attention_norm(alpha))

        pair = torch.cat([value_i, value_j, edge_attr], dim=-1)
        gate = torch.sigmoid(self.gate_norm(self.lin_gate(pair)))
        return alpha * self.message_mlp(pair) * gate

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, edge_dim={self.edge_dim}, '
                f'heads={self.heads})')
