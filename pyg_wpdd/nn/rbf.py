import torch
from torch import Tensor


class GaussianRBF(torch.nn.Module):
    r"""Expands edge distances in a fixed basis of Gaussians.

    .. math::
        \mathbf{e}_{ij,k} = \exp\left(-\frac{(x_{ij} - \mu_k)^2}{2\sigma^2}\right),
        \qquad x_{ij} = \begin{cases} -1/d_{ij} & \text{if inverse} \\
        d_{ij} & \text{otherwise} \end{cases}

    with :math:`K` centres :math:`\mu_k` spaced evenly on :obj:`[start, stop]` and
    :math:`\sigma` equal to their spacing. PDDFormer expands :math:`-1/d` with 256 Gaussians on
    :math:`[-6, 0]`, so that short bonds get the finest resolution; CGCNN expands :math:`d` with
    41 Gaussians on :math:`[0, 8]` Å.

    Args:
        start (float): First centre. (default: :obj:`-6.0`)
        stop (float): Last centre. (default: :obj:`0.0`)
        num_gaussians (int): Number of centres :math:`K`. (default: :obj:`256`)
        inverse (bool): If :obj:`True`, expand :math:`-1/d` instead of :math:`d`.
            (default: :obj:`True`)

    Shapes:
        - **input:** distances :math:`[num\_edges]` in Å
        - **output:** :math:`[num\_edges, K]`
    """
    def __init__(self, start: float = -6.0, stop: float = 0.0,
                 num_gaussians: int = 256, inverse: bool = True):
        super().__init__()
        if num_gaussians < 2:
            raise ValueError(f"'num_gaussians' must be at least 2 (got {num_gaussians})")
        if not stop > start:
            raise ValueError(f"'stop' must be greater than 'start' (got start={start}, "
                             f"stop={stop})")
        self.start = float(start)
        self.stop = float(stop)
        self.num_gaussians = int(num_gaussians)
        self.inverse = bool(inverse)

        centres = torch.linspace(self.start, self.stop, self.num_gaussians)
        self.register_buffer('centres', centres, persistent=False)
        self.width = (self.stop - self.start) / (self.num_gaussians - 1)

    def forward(self, dist: Tensor) -> Tensor:
        # A zero distance maps to -inf, so every Gaussian gives 0 rather than NaN.
        x = -1.0 / dist if self.inverse else dist
        diff = (x.unsqueeze(-1) - self.centres) / self.width
        return torch.exp(-0.5 * diff * diff)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(start={self.start}, stop={self.stop}, '
                f'num_gaussians={self.num_gaussians}, inverse={self.inverse})')

