import torch
from torch import Tensor
from torch.nn import Linear
from torch_geometric.utils import scatter


class UPDDMixing(torch.nn.Module):
    r"""Global mixing of node features with the unit-cell distance matrix
    :math:`\mathbf{U}`, :math:`U_{ij} = 1 / d_{\min}(i, j)` (the "matrix-based message
    passing" of PDDFormer, `arXiv:2408.12984 <https://arxiv.org/abs/2408.12984>`_):

    .. math::
        \mathbf{H}' = \mathbf{H} + \mathbf{W}\,\hat{\mathbf{U}}\mathbf{H}, \qquad
        \hat{U}_{ij} = \frac{U_{ij}}{\sum_{l} U_{il}}

    Rows of :math:`\mathbf{U}` are normalised to sum to one, so the mixed feature is a
    distance-weighted mean over all atoms of the cell, whatever its size. :math:`\mathbf{U}` is
    sparse and block-diagonal over the crystals of a batch.

    .. warning::
        :math:`\mathbf{U}` depends on the chosen unit cell, so a model that uses this layer
        is not invariant under supercells.

    Args:
        channels (int): Node width :math:`C`.

    Shapes:
        - **input:** node features :math:`[num\_atoms, C]`, pair indices
          :math:`[2, num\_pairs]` (row 0 the column :math:`j`, row 1 the row :math:`i`),
          pair weights :math:`U_{ij}` :math:`[num\_pairs]`
        - **output:** node features :math:`[num\_atoms, C]`
    """
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.lin = Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin.reset_parameters()

    def forward(self, h: Tensor, updd_index: Tensor, updd_weight: Tensor) -> Tensor:
        col, row = updd_index[0], updd_index[1]
        weight = updd_weight.to(h.dtype)

        row_sum = scatter(weight, row, dim=0, dim_size=h.size(0), reduce='sum')
        norm_weight = weight / row_sum[row].clamp_min(1e-12)

        mixed = scatter(norm_weight.unsqueeze(-1) * h[col], row, dim=0, dim_size=h.size(0),
                        reduce='sum')
        return h + self.lin(mixed)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels})'
