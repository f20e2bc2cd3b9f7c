"""Conditional 3D latent diffusion (DEMIST): autoencoders, conditioning streams, LoRA, samplers, tiling.

``SynthesisModel`` (``engine.model``) is the entry point used by the pipeline; the other modules hold one
concept each. Import submodules directly (they import torch and MONAI).
"""
