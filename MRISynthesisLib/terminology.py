"""Standard terminology for lesion segments, using only entries that exist in 3D Slicer's terminology lists.

Slicer's terminology selector looks entries up by (context, category code, type code); an entry that is not
in a loaded list shows as unknown and cannot be found. Neither "Lesion" (SCT 52988006) nor "Infarct"
(SCT 55641003) is in Slicer's lists, so each kind of lesion maps to the closest type that is, all in the
category "Morphologically Altered Structure" (SCT 49755003), checked against Slicer's
``Modules/Loadable/Terminologies/Resources``:

- ``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json`` ("3D Slicer General Anatomy list", the
  default list): Necrosis 6574001, Edema 79654002, Mass 4147007.
- ``SegmentationCategoryTypeModifier-DICOM-Master.json`` ("DICOM master list"): Inflammation 23583003.
- ``AnatomicRegionAndModifier-DICOM-Master.json`` ("Anatomic codes - DICOM master list"): Cerebral White
  Matter 68523003.

Serialized form (``vtkSegment::SetTerminology``): ``context~category~type~typeModifier~anatomicContext~
region~regionModifier``, each code as ``scheme^value^meaning``.
"""

from __future__ import annotations

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ALTERED_STRUCTURE = "SCT^49755003^Morphologically Altered Structure"
CEREBRAL_WHITE_MATTER = "SCT^68523003^Cerebral White Matter"
NO_CODE = "^^"

# (keyword in the segment name, context, type code, anatomic region); first match wins.
LESION_TYPES = [
    ("infarct", GENERAL_ANATOMY, "SCT^6574001^Necrosis", NO_CODE),          # infarction = ischaemic necrosis
    ("ms lesion", DICOM_MASTER, "SCT^23583003^Inflammation", CEREBRAL_WHITE_MATTER),  # inflammatory demyelination
    ("hyperintensity", GENERAL_ANATOMY, "SCT^79654002^Edema", NO_CODE),
]
DEFAULT_LESION_TYPE = (GENERAL_ANATOMY, "SCT^4147007^Mass", NO_CODE)  # Slicer's generic lesion type


def lesion_terminology(segment_name: str) -> str:
    """Serialized Slicer terminology entry for a lesion segment called ``segment_name``."""
    name = segment_name.lower()
    context, kind, region = next(((c, t, r) for key, c, t, r in LESION_TYPES if key in name), DEFAULT_LESION_TYPE)
    return "~".join([context, ALTERED_STRUCTURE, kind, NO_CODE, ANATOMIC_CONTEXT, region, NO_CODE])
