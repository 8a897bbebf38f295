"""Energy-based models, in lecture order: Hopfield networks (Eq. EBM-1…5), Boltzmann
machines (EBM-6…10), restricted Boltzmann machines (EBM-11) and deep belief nets (EBM-12)."""
