r"""Hard-concrete gates (Louizos, Welling & Kingma, 2018, "Learning Sparse Neural Networks
through L0 Regularization").

A gate :math:`z \in [0, 1]` is a stretched and clipped binary-concrete variable with location
:math:`\log\alpha` (the learnable parameter), temperature :math:`\beta` and stretch interval
:math:`(\gamma, \zeta)`, :math:`\gamma < 0 < 1 < \zeta`:

.. math::

    u \sim \mathcal U(0, 1), \quad
    s = \sigma\big((\log u - \log(1-u) + \log\alpha) / \beta\big), \quad
    z = \min\big(1, \max(0, s(\zeta - \gamma) + \gamma)\big).

Three deterministic quantities derive from it (defaults :math:`\beta=2/3, \gamma=-0.1,
\zeta=1.1`):

* **Probability of being non-zero** (the expected L0 contribution, differentiable):
  :math:`P(z \neq 0) = P\big(s > \tfrac{-\gamma}{\zeta-\gamma}\big)
  = \sigma\big(\log\alpha - \beta \log(-\gamma/\zeta)\big)`, because
  :math:`\log u - \log(1-u)` is standard logistic and
  :math:`\operatorname{logit}\tfrac{-\gamma}{\zeta-\gamma} = \log(-\gamma/\zeta)`.
* **Test-time gate** (Louizos et al., eq. 13): :math:`\hat z = \min(1, \max(0,
  \sigma(\log\alpha)(\zeta-\gamma) + \gamma))`. It is non-zero iff
  :math:`\sigma(\log\alpha) > -\gamma/(\zeta-\gamma) = 1/12`, i.e.
  :math:`\log\alpha > \log(-\gamma/\zeta) = -\ln 11 \approx -2.398`. This is what
  :meth:`HardConcreteGate.active_mask` reports and what multiplies the weights in eval mode.
* **Median gate**: the logistic noise has median 0 and every step above is monotone, so the median
  of :math:`z` is :math:`\operatorname{med} z = \min(1, \max(0, \sigma(\log\alpha/\beta)
  (\zeta-\gamma) + \gamma))`. The *median gate* rounds this median at the midpoint of the
  stretch interval: the gate is counted as active iff :math:`\sigma(\log\alpha/\beta) > 1/2`, i.e.
  :math:`\operatorname{med} z > (\gamma+\zeta)/2` (:math:`=1/2` with the defaults), i.e.
  :math:`P(z > (\gamma+\zeta)/2) = \sigma(\log\alpha) > 1/2`, i.e. :math:`\log\alpha > 0` for
  every :math:`\beta`. Whenever :math:`-\gamma < \zeta` (the defaults: :math:`0 > -\ln 11`) it is
  stricter than the test-time gate, so the median-gate density never exceeds the test-time
  density. (The weaker criterion
  ":math:`\operatorname{med} z > 0`", i.e. :math:`\log\alpha > -\beta\ln 11`, is *not* used.)

:math:`\log\alpha` is never clamped. A widely copied reference implementation clamps it to
:math:`[\log 0.01, \log 100]` after every step; then every gate keeps
:math:`P(z\neq 0) \ge \sigma(\log 0.01 + \tfrac23\ln 11) \approx 0.047`, so an expected density
below about 4.7% is unreachable and a low density target could never be met.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "HardConcreteGate",
    "hard_concrete_median",
    "hard_concrete_prob_nonzero",
    "hard_concrete_sample",
    "hard_concrete_test_gate",
]

DEFAULT_BETA = 2.0 / 3.0
DEFAULT_GAMMA = -0.1
DEFAULT_ZETA = 1.1


def hard_concrete_sample(
    log_alpha: torch.Tensor,
    u: torch.Tensor,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    zeta: float = DEFAULT_ZETA,
) -> torch.Tensor:
    r"""Reparameterised hard-concrete sample from uniform noise ``u`` in ``(0, 1)``.

    .. math::
        s = \sigma\big((\log u - \log(1-u) + \log\alpha)/\beta\big), \quad
        z = \operatorname{clamp}\big(s(\zeta-\gamma)+\gamma,\ 0,\ 1\big)

    Differentiable in ``log_alpha`` (where the clamp is inactive); ``u`` broadcasts against it.
    """
    logistic = torch.log(u) - torch.log1p(-u)
    s = torch.sigmoid((logistic + log_alpha) / beta)
    return torch.clamp(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_prob_nonzero(
    log_alpha: torch.Tensor,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    zeta: float = DEFAULT_ZETA,
) -> torch.Tensor:
    r""":math:`P(z \neq 0) = \sigma\big(\log\alpha - \beta\log(-\gamma/\zeta)\big)` (differentiable)."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def hard_concrete_test_gate(
    log_alpha: torch.Tensor, gamma: float = DEFAULT_GAMMA, zeta: float = DEFAULT_ZETA
) -> torch.Tensor:
    r"""Deterministic test-time gate (Louizos et al., eq. 13).

    .. math::
        \hat z = \operatorname{clamp}\big(\sigma(\log\alpha)(\zeta-\gamma)+\gamma,\ 0,\ 1\big)

    :math:`\hat z > 0 \iff \log\alpha > \log(-\gamma/\zeta)` (:math:`= -\ln 11` by default).
    """
    return torch.clamp(torch.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_median(
    log_alpha: torch.Tensor,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    zeta: float = DEFAULT_ZETA,
) -> torch.Tensor:
    r"""Median of the gate.

    .. math::
        \mathrm{med}\,z = \mathrm{clamp}\big(\sigma(\log\alpha/\beta)(\zeta-\gamma)+\gamma,\ 0,\ 1\big)

    The *median gate* counts a gate as active iff this exceeds :math:`(\gamma+\zeta)/2`, i.e.
    :math:`\sigma(\log\alpha/\beta) > 1/2`, i.e. :math:`\log\alpha > 0`.
    """
    return torch.clamp(torch.sigmoid(log_alpha / beta) * (zeta - gamma) + gamma, 0.0, 1.0)


def _as_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class HardConcreteGate(nn.Module):
    r"""A tensor of hard-concrete gates with learnable locations ``log_alpha``.

    In training mode, calling the module draws a fresh reparameterised sample (one independent
    gate per entry); in eval mode it returns the deterministic test-time gate
    :math:`\hat z`. See the module docstring for the formulas and the median gate.

    Args:
        shape: Shape of the gate tensor (an int or a sequence of positive ints).
        droprate_init: Initial drop rate :math:`d \in (0, 1)`; ``log_alpha`` starts at
            :math:`\log(1-d) - \log d` plus :math:`\mathcal N(0, \text{init\_noise}^2)` noise.
        beta: Temperature :math:`\beta > 0` of the concrete distribution.
        gamma: Lower end of the stretch interval, :math:`\gamma < 0`.
        zeta: Upper end of the stretch interval, :math:`\zeta > 1`.
        init_noise: Standard deviation (>= 0) of the initial noise on ``log_alpha``.
        eps: Uniform noise is drawn in ``[eps, 1 - eps]`` to keep the logistic noise finite.
        device: Device of ``log_alpha``.
        dtype: Floating dtype of ``log_alpha``.

    Attributes:
        log_alpha: The learnable gate locations, shape ``shape``. Never clamped.
    """

    log_alpha: nn.Parameter

    def __init__(
        self,
        shape: int | Sequence[int],
        droprate_init: float = 0.5,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        zeta: float = DEFAULT_ZETA,
        init_noise: float = 1e-2,
        eps: float = 1e-6,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dims: tuple[int, ...] = (shape,) if isinstance(shape, int) else tuple(shape)
        if not dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims):
            raise ValueError(
                f"shape must be a positive int or a non-empty sequence of positive ints, got {shape!r}"
            )
        droprate_init = _as_float("droprate_init", droprate_init)
        if not 0.0 < droprate_init < 1.0:
            raise ValueError(f"droprate_init must lie in (0, 1), got {droprate_init!r}")
        self.beta = _as_float("beta", beta)
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.gamma = _as_float("gamma", gamma)
        if self.gamma >= 0:
            raise ValueError(f"gamma must be < 0, got {gamma!r}")
        self.zeta = _as_float("zeta", zeta)
        if self.zeta <= 1:
            raise ValueError(f"zeta must be > 1, got {zeta!r}")
        self.init_noise = _as_float("init_noise", init_noise)
        if self.init_noise < 0:
            raise ValueError(f"init_noise must be >= 0, got {init_noise!r}")
        self.eps = _as_float("eps", eps)
        if not 0.0 < self.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
        self.droprate_init = droprate_init
        self.shape = torch.Size(int(d) for d in dims)
        self.log_alpha = nn.Parameter(torch.empty(self.shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sets ``log_alpha`` to :math:`\\log(1-d) - \\log d + \\mathcal N(0, \\text{init\\_noise}^2)`."""
        mean = math.log(1.0 - self.droprate_init) - math.log(self.droprate_init)
        with torch.no_grad():
            if self.init_noise > 0:
                self.log_alpha.normal_(mean, self.init_noise)
            else:
                self.log_alpha.fill_(mean)

    @property
    def num_gates(self) -> int:
        """Number of gates, ``log_alpha.numel()``."""
        return self.log_alpha.numel()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh reparameterised sample :math:`z` (differentiable in ``log_alpha``)."""
        u = torch.rand(
            self.shape, generator=generator, device=self.log_alpha.device, dtype=self.log_alpha.dtype
        )
        u = u * (1.0 - 2.0 * self.eps) + self.eps
        return hard_concrete_sample(self.log_alpha, u, self.beta, self.gamma, self.zeta)

    def test_gate(self) -> torch.Tensor:
        r"""The deterministic test-time gate :math:`\hat z`."""
        return hard_concrete_test_gate(self.log_alpha, self.gamma, self.zeta)

    def median_gate(self) -> torch.Tensor:
        """The median of each gate (see :func:`hard_concrete_median`)."""
        return hard_concrete_median(self.log_alpha, self.beta, self.gamma, self.zeta)

    def forward(self) -> torch.Tensor:
        """A sample in training mode, the test-time gate in eval mode."""
        return self.sample() if self.training else self.test_gate()

    def prob_nonzero(self) -> torch.Tensor:
        r""":math:`P(z \neq 0)` per gate (differentiable)."""
        return hard_concrete_prob_nonzero(self.log_alpha, self.beta, self.gamma, self.zeta)

    def expected_density(self) -> torch.Tensor:
        r"""Mean of :math:`P(z \neq 0)` over the gates (differentiable scalar)."""
        return self.prob_nonzero().mean()

    def active_mask(self) -> torch.Tensor:
        r"""Boolean mask of :math:`\hat z > 0`, i.e. :math:`\log\alpha > \log(-\gamma/\zeta)`.

        Computed from :meth:`test_gate` itself, so it agrees exactly with the gates that multiply
        the weights in eval mode (even within rounding distance of the threshold).
        """
        with torch.no_grad():
            return self.test_gate() > 0

    def median_active_mask(self) -> torch.Tensor:
        r"""Boolean mask of the median gate, :math:`\sigma(\log\alpha/\beta) > 1/2 \iff \log\alpha > 0`."""
        return self.log_alpha.detach() > 0

    def active_fraction(self) -> float:
        """Fraction of gates whose test-time gate is non-zero."""
        return float(self.active_mask().float().mean())

    def median_active_fraction(self) -> float:
        """Fraction of gates that are active under the median gate."""
        return float(self.median_active_mask().float().mean())

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.shape)}, droprate_init={self.droprate_init}, beta={self.beta:.4g}, "
            f"gamma={self.gamma}, zeta={self.zeta}"
        )
