r"""Generative adversarial networks — the lecture's GAN section, Eq. GAN-1…GAN-10.

* :mod:`.game` — the value function, both players' losses, gradient penalties,
  the optimal discriminator of Fig. 1, and Algorithm 1 (:class:`AdversarialTraining`);
* :mod:`.networks` — MLP players for 2-D data and the remedies for mode collapse
  (minibatch discrimination; packing and experience replay live in :mod:`.game`);
* :mod:`.modes` — the mode-collapse benchmark (ring of 8 and grid of 25 Gaussians);
* :mod:`.dcgan` — DCGAN players for images, class-conditional when asked (Eq. GAN-6, GAN-7);
* :mod:`.style` — BN / IN / AdaIN and a small StyleGAN generator (Eq. GAN-9, GAN-10);
* :mod:`.recipes` — ``minigen train gan``: options, evaluation, figures.
"""
from .game import (LOSSES, GAN, AdversarialTraining, ReplayBuffer, discriminator_loss, expected_value,
                   generator_loss, gradient_penalty, jensen_shannon, log_d, log_one_minus_d, optimal_discriminator,
                   pack, value_function)
from .networks import Maxout, MinibatchDiscrimination, mlp_discriminator, mlp_generator

__all__ = ["LOSSES", "GAN", "AdversarialTraining", "ReplayBuffer", "discriminator_loss", "expected_value",
           "generator_loss", "gradient_penalty", "jensen_shannon", "log_d", "log_one_minus_d",
           "optimal_discriminator", "pack", "value_function", "Maxout", "MinibatchDiscrimination",
           "mlp_discriminator", "mlp_generator"]
