"""glasshpc: predicting the dynamics of glass-forming liquids from their structure.

Reduced Lennard-Jones units of the large species A throughout (sigma_AA = eps_AA = m = k_B = 1,
tau = sqrt(m sigma_AA^2 / eps_AA)); see ../shared/SCIENCE.md.
"""

__version__ = "0.1.0"

# numba fixes each kernel's cache directory when its @njit(cache=True) decorator runs: choose it
# (GLASSHPC_CACHE_DIR, NUMBA_CACHE_DIR, or a private fallback) before any kernel module is imported
from . import jitcache as _jitcache  # noqa: E402

_jitcache.configure()
