"""MS lesion segmentation: a MONAI UNet trained on phantoms with SynthSeg-style domain randomisation.

* ``architecture.py`` — the card's ``architecture`` as a typed object and the network it builds;
* ``augment.py`` — domain randomisation of a clean phantom (tissue contrast, bias, resolution, noise, gamma; the
  ``REAL_LIKE`` setting with real lesion contrast and look-alikes);
* ``data.py`` — the cache of training phantoms and the crop sampler;
* ``segmenter.py`` — ``LesionSegmenter``: inputs on the reference grid -> lesion mask, used by the pipeline
  and ``mrisynthesis segment-lesions``;
* ``scores.py`` — Dice, lesion-wise F1 and volume difference;
* ``train.py`` — the training script that writes the bundled model.
"""
