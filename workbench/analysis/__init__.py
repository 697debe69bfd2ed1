"""Numbers about models and weights (no plotting): cost meter, and later spectra and fits."""
from .cost import count_flops, count_parameters, measure_cost, measure_latency, peak_memory_mb
from .entropy import matrix_entropy, matrix_nuclear_norm
from .spectra import fit_power_law, spectra

__all__ = ["count_flops", "count_parameters", "measure_cost", "measure_latency", "peak_memory_mb",
           "matrix_entropy", "matrix_nuclear_norm", "fit_power_law", "spectra"]
