"""MRISynthesis backend: synthesize MR maps a clinic did not acquire with conditional 3D latent diffusion.

Plain Python (torch, MONAI, SimpleITK); never imports Qt or ``slicer.app``. Only ``mrml`` imports ``slicer``.
"""

__version__ = "0.1.0"
