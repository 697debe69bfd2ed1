"""Numbers about models and weights (no plotting): cost meter, and later spectra and fits."""
from .cost import count_flops, count_parameters, measure_cost, measure_latency, peak_memory_mb

__all__ = ["count_flops", "count_parameters", "measure_cost", "measure_latency", "peak_memory_mb"]
