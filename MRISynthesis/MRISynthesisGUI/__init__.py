"""Qt/Slicer side of the MRISynthesis module: parameters, dependency installer, logic and the panel.

Imported only inside Slicer (or tests with Slicer's Python framework); the backend ``MRISynthesisLib`` never
imports this. Nothing here imports torch or MONAI at module scope.
"""
