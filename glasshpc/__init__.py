"""glasshpc: predicting the dynamics of glass-forming liquids from their structure.

Reduced Lennard-Jones units of the large species A throughout (sigma_AA = eps_AA = m = k_B = 1,
tau = sqrt(m sigma_AA^2 / eps_AA)); see ../shared/SCIENCE.md.
"""

__version__ = "0.1.0"
