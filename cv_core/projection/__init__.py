"""2-D maps of latents: one shared UMAP fit, fast re-projection of edited latents, a cache, warm-up.

The UMAP import is deferred to the first fit, so importing this package is cheap.
"""
from .edited import EditCoordinates
from .fidelity import neighbour_agreement, trustworthiness
from .latent_map import LatentMap, placement_text, release_epochs
from .map_cache import fit_cached, fit_sampled_cached, latents_digest
from .scale import DEFAULT_SAMPLE, Fidelity, ScaleMap, fit_sampled, stratified_sample
from .warmup import warm_up

__all__ = ["DEFAULT_SAMPLE", "EditCoordinates", "Fidelity", "LatentMap", "ScaleMap", "fit_cached", "fit_sampled", "fit_sampled_cached",
           "latents_digest",
           "neighbour_agreement", "placement_text", "release_epochs", "stratified_sample", "trustworthiness",
           "warm_up"]
