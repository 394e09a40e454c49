from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, Linear


class GatedPDDLayer(torch.nn.Module):
    r"""The gated layer that mixes the per-atom pairwise distance distribution into the node
    features, from `"PDDFormer: Pairwise Distance Distribution Graph Transformer for Crystal
    Material Property Prediction" <https://arxiv.org/abs/2408.12984>`_ (Shen et al., IJCAI
    2025).

    .. math::
        \mathbf{A} = \mathbf{P} + \mathbf{H}, \qquad
        [\mathbf{X}_1, \mathbf{X}_2] = \mathbf{W}_s\,\mathrm{BN}(\mathbf{A})

        \mathbf{H}' = \mathbf{H} + \mathbf{W}_o\big(\mathbf{W}_1\mathbf{X}_1 \odot
        \mathrm{Dropout}(\mathrm{GELU}(\mathbf{X}_2))\big), \qquad \mathbf{P}' = \mathbf{A}

    :math:`\mathbf{P}` starts as a linear map of the WPDD rows and is carried from one PDD
    layer to the next.

    Args:
        channels (int): Node width :math:`C`.
        dropout (float): Dropout probability on the gate. (default: :obj:`0.0`)

    Shapes:
        - **input:** node features :math:`\mathbf{H}` :math:`[num\_atoms, C]`, PDD features
          :math:`\mathbf{P}` :math:`[num\_atoms, C]`
        - **output:** :math:`(\mathbf{H}', \mathbf{P}')`, both :math:`[num\_atoms, C]`
    """
    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must lie in [0, 1) (got {dropout})")
        self.channels = channels
        self.dropout = dropout

        self.norm = BatchNorm1d(channels)
        self.lin_split = Linear(channels, 2 * channels)
        self.lin_value = Linear(channels, channels)
        self.lin_out = Linear(channels, channels)

        self.reset_parameters()

    def reset_parameters(self):
        self.norm.reset_parameters()
        self.lin_split.reset_parameters()
        self.lin_value.reset_parameters()
        self.lin_out.reset_parameters()

    def forward(self, h: Tensor, p: Tensor) -> Tuple[Tensor, Tensor]:
        a = p + h
        x1, x2 = self.lin_split(self.norm(a)).chunk(2, dim=-1)

        gate = F.dropout(F.gelu(x2), p=self.dropout, training=self.training)
        h = h + self.lin_out(self.lin_value(x1) * gate)
        return h, a

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels}, dropout={self.dropout})'
