r"""Normalizing flows — exact likelihoods through an invertible change of variables, Eq. FLOW-1…FLOW-4.

A flow maps data x to a latent z with an invertible, differentiable f and
scores x by the change-of-variables formula (Eq. FLOW-1)

.. math:: \log p_\theta(x) = \log p_z(f_\theta(x)) + \log\left|\det \frac{\partial f_\theta(x)}{\partial x}\right| ,

so it is trained by plain maximum likelihood (Eq. FLOW-3) and samples by
running :math:`f^{-1}` on :math:`z\sim\mathcal N(0, I)`. The art is choosing
layers whose inverse and Jacobian determinant are cheap.

Every layer here is a :class:`Bijection`: ``forward(x) -> (y, log|det J|)``
per example, and ``inverse(y) -> x``. In lecture order:

* :class:`PlanarFlow` (Rezende & Mohamed 2015, Eq. FLOW-4),
  :math:`f(z) = z + u\,\tanh(w^\top z + b)`, invertible because u is
  reparameterized so that :math:`w^\top u \ge -1`; its inverse is a 1-D root
  find. :func:`planar_potential_figure` redraws the paper's figures.
* :class:`AffineCoupling` (RealNVP, Dinh et al. 2017, Eq. FLOW-2): the masked
  half of the input passes unchanged and sets a scale and shift for the other
  half, so the Jacobian is triangular and :math:`\log|\det| = \sum s`.
* RealNVP's other layers: :class:`ActNorm` (per-channel affine, initialised
  from the first batch), :class:`Squeeze` (2×2 space to channels) and the
  multi-scale architecture that factors half the variables out after each
  scale (:class:`RealNVP`), with dequantization and the logit transform for
  8-bit images.
* :class:`FlowDensity` — a stack of bijections over vectors (2-D toys).

Files: ``layers.py`` (the bijections), ``models.py`` (FlowDensity, RealNVP),
``potentials.py`` (Rezende & Mohamed's figures), ``recipes.py`` (the command line).
"""
from .layers import (ActNorm, AffineCoupling, Bijection, FlowSequence, LogitTransform, PlanarFlow, Squeeze,
                     channel_mask, checkerboard_mask, numerical_log_det_jacobian, standard_normal_log_prob)
from .models import FlowDensity, RealNVP
from .potentials import POTENTIALS, fit_planar_flow, flow_log_density, planar_potentials_experiment, potential

__all__ = ["Bijection", "FlowSequence", "PlanarFlow", "AffineCoupling", "ActNorm", "Squeeze", "LogitTransform",
           "checkerboard_mask", "channel_mask", "FlowDensity", "RealNVP", "standard_normal_log_prob",
           "numerical_log_det_jacobian", "POTENTIALS", "potential", "flow_log_density", "fit_planar_flow",
           "planar_potentials_experiment"]
