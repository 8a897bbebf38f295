r"""Eq. TAX-1, the taxonomy of generative models: does the model write its density down?

The lecture opens with the tree of Goodfellow's tutorial; every generative model class here says
where it stands in it with a class attribute ``density``:

- **explicit, tractable** — :math:`\log p_\theta(x)` exactly: autoregressive models (a product of
  conditionals) and flows (a change of variables). They expose ``log_prob(x)``.
- **explicit, approximate** — :math:`p_\theta(x)` is defined, but only bounded or estimated: VAEs and
  diffusion models through a variational bound (``elbo``, ``iwae_bound``, ``variational_bound``);
  Boltzmann machines, RBMs and DBNs through an intractable partition function (``log_prob`` given
  :math:`\log Z` exact by enumeration for small nets, or estimated by annealed importance sampling).
- **implicit** — no density at all, only a sampler: GANs. They expose none of those methods.
"""
from __future__ import annotations

TRACTABLE = "explicit, tractable"
APPROXIMATE = "explicit, approximate"
IMPLICIT = "implicit"
KINDS = (TRACTABLE, APPROXIMATE, IMPLICIT)

#: The methods through which an explicit-density model reports (a bound on) its log-likelihood.
DENSITY_METHODS = ("log_prob", "elbo", "iwae_bound", "variational_bound")


def density_kind(model) -> str:
    """Eq. TAX-1: where ``model`` (an instance or a class) stands in the taxonomy, one of :data:`KINDS`."""
    cls = model if isinstance(model, type) else type(model)
    kind = getattr(cls, "density", None)
    if kind not in KINDS:
        raise TypeError(f"density_kind: {cls.__name__} is not a generative model of the taxonomy (its class "
                        f"attribute `density` should be one of {KINDS}, got {kind!r})")
    return kind


def density_methods(model) -> list:
    """The methods of :data:`DENSITY_METHODS` that ``model`` has."""
    return [name for name in DENSITY_METHODS if callable(getattr(model, name, None))]
