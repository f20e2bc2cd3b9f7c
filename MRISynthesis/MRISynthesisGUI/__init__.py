"""Qt/Slicer helpers of the MRISynthesis module (parameters, dependencies, the panel controller).

Imported only inside the Slicer application; the backend (``MRISynthesisLib``) never imports this.
"""
