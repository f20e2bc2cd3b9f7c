"""Browser front end (``mrisynthesis serve``): trame-slicer views on Slicer's MRML over the same worker.

Optional: needs ``pip install "mrisynthesis[web]"``; nothing else in the package imports it.
"""
