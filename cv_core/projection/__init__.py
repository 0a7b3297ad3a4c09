"""2-D maps of latents: one shared UMAP fit, fast re-projection of edited latents, a cache, warm-up.

The UMAP import is deferred to the first fit, so importing this package is cheap.
"""
from .fidelity import neighbour_agreement, trustworthiness
from .latent_map import LatentMap
from .map_cache import fit_cached, latents_digest
from .warmup import warm_up

__all__ = ["LatentMap", "fit_cached", "latents_digest", "neighbour_agreement", "trustworthiness", "warm_up"]
