"""Simulated NSD + NSD-Imagery data with a known generative model.

    from fmri2img.data.simulate import SimulationConfig, simulate
    cfg = SimulationConfig.from_scale("small", seed=0)
    root = simulate(out_dir, cfg)

Modules: ``config`` (all parameters, presets; per-stream tables in ``stream_tables``),
``options`` (the command's options), ``design`` (NSD trial design, behaviour),
``stimuli`` (latents), ``render`` (images), ``layout`` (contrast maps, pRFs),
``embedding`` (CLIP-like targets), ``anatomy`` (volumes and ROIs), ``voxels`` (response
model, beta synthesis),
``imagery_design`` (NSD-Imagery session), ``writers`` (file formats), ``truth`` (ground
truth files and loader), ``pipeline`` (``simulate``).
"""

from fmri2img.data.simulate.config import PRESETS, SimulationConfig
from fmri2img.data.simulate.options import SimulateOptions
from fmri2img.data.simulate.pipeline import simulate
from fmri2img.data.simulate.truth import GroundTruth, load_ground_truth

__all__ = ["PRESETS", "GroundTruth", "SimulateOptions", "SimulationConfig", "load_ground_truth",
           "simulate"]
