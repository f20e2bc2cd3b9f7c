"""Bridge between backend ``Volume``s / synthesis results and a Slicer MRML scene.

The only module of the package that imports ``slicer`` and ``vtk``. Every function takes the scene
as an argument, so it runs inside Slicer and in plain Python with the ``slicer-core`` wheel.

Geometry: ``Volume`` is in ITK/LPS convention, MRML in RAS. IJK->RAS = diag(-1, -1, 1, 1) @ IJK->LPS,
with IJK in (i, j, k) = (x, y, z) index order and arrays in (k, j, i) = (z, y, x) order on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from . import colormaps
from .errors import InputError
from .mrml_transaction import SceneTransaction, hierarchy_items, scene_node_ids  # noqa: F401 (re-exported)
from .terminology import lesion_terminology
from .volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

UNCERTAINTY_COLORMAP = "Viridis"

# Outline colours chosen to stand out on Inferno and grey backgrounds.
LESION_COLORS = [(0.0, 0.9, 1.0), (0.3, 1.0, 0.3), (1.0, 0.3, 1.0), (0.3, 0.5, 1.0), (1.0, 1.0, 1.0),
                 (0.6, 1.0, 0.9)]

LESION_METHOD_ATTRIBUTE = "MRISynthesis.LesionMethod"
ROLE_ATTRIBUTE = "MRISynthesis.Role"  # node attribute: output / uncertainty / lesions / statistics


# ----------------------------------------------------------------------------------------------- geometry
def _to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def _from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def ijk_to_ras(volume: Volume) -> np.ndarray:
    """4x4 IJK->RAS matrix of ``volume`` (its LPS geometry with x and y negated)."""
    return LPS_TO_RAS @ volume.index_to_physical()


def node_ijk_to_ras(node) -> np.ndarray:
    """4x4 IJK->RAS of a volume node in world coordinates (a linear parent transform is applied)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    result = _from_vtk_matrix(matrix)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError("is under a non-linear transform; harden the transform first (Data module, "
                             "right-click > Harden transform)", node.GetName())
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        result = _from_vtk_matrix(to_world) @ result
    return result


# ------------------------------------------------------------------------------------ volume <-> node
def node_to_volume(node) -> Volume:
    """A copy of a scalar or vector volume node as a ``Volume`` (vector components become channels)."""
    if node is None:
        raise InputError("no volume node selected", "input")
    image = node.GetImageData() if hasattr(node, "GetImageData") else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError("volume node holds no image data", node.GetName())
    dims = image.GetDimensions()
    components = image.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).copy()
    array = array.reshape(tuple(reversed(dims)) + ((components,) if components > 1 else ()))
    if components > 1:
        array = np.moveaxis(array, -1, 0)
    lps = LPS_TO_RAS @ node_ijk_to_ras(node)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return Volume(array, lps[:3, 3], spacing, direction.ravel(), {"node": node.GetName()})


def volume_to_node(scene, volume: Volume, name: str, node=None, class_name: str = "vtkMRMLScalarVolumeNode"):
    """Put a 3D ``volume`` into a (new or given) volume node with exactly its geometry; returns the node."""
    if volume.array.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {volume.array.shape}", name)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    else:
        node.SetName(name)
    array = volume.array
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(_to_vtk_matrix(ijk_to_ras(volume)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# ---------------------------------------------------------------------------------------------- display
def color_node_id(scene, name: str) -> str:
    """ID of the colour node called ``name``; perceptual maps missing from the scene are built once."""
    nodes = scene.GetNodesByClassByName("vtkMRMLColorNode", name)
    if nodes.GetNumberOfItems() > 0:
        return nodes.GetItemAsObject(0).GetID()
    # Full Slicer ships "Inferno"/"Viridis" colour nodes; the slicer-core wheel does not, so build them.
    if name not in colormaps.ANCHORS or name == "Grey":
        return "vtkMRMLColorTableNodeGrey"
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetNamesInitialised(True)
    for index, rgb in enumerate(colormaps.lookup_table(name, 256)):
        node.SetColor(index, f"{name}{index}", *(float(c) for c in rgb), 1.0)
    node.SetAttribute("Category", "Continuous")
    return node.GetID()


def set_display(scene, node, colormap: str, window: tuple[float, float]) -> None:
    """Colour map and fixed window ``(low, high)`` in the node's physical units."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node_id(scene, colormap))
    display.AutoWindowLevelOff()
    low, high = float(window[0]), float(window[1])
    display.SetWindowLevelMinMax(low, high if high > low else low + 1.0)


# ------------------------------------------------------------------------------------ subject hierarchy
def place_next_to(scene, node, reference_node) -> None:
    """Put ``node`` under the same subject-hierarchy parent as ``reference_node`` (a sibling)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    parent = hierarchy.GetSceneItemID()
    reference_item = hierarchy.GetItemByDataNode(reference_node) if reference_node is not None else 0
    if reference_item:
        parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


# ------------------------------------------------------------------------------------------- lesions
def add_lesion_segmentation(scene, lesions: Volume, reference_node, name: str, segment_name: str = "Lesion"):
    """Segmentation node with one segment per lesion label (named, coloured, with terminology), shown as outlines.

    Args:
        lesions: integer label map ``(z, y, x)`` (0 background, 1..n lesions) on the reference grid.
        reference_node: the volume whose geometry the segmentation takes.
    """
    reference = node_to_volume(reference_node) if reference_node is not None else None
    if reference is not None and not lesions.same_grid(reference):
        raise InputError("lesion label map is not on the reference grid", "lesions")
    labels = np.asarray(lesions.array)
    if labels.ndim != 3 or not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)):
        raise InputError(f"lesion map must be a 3D integer label map, got {labels.dtype} {labels.shape}", "lesions")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(labels.shape[2], labels.shape[1], labels.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
        np.ascontiguousarray(labels, dtype=np.uint16).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_SHORT))
    image.SetImageToWorldMatrix(_to_vtk_matrix(ijk_to_ras(lesions)))
    if labels.any() and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            image, node, segment_name):
        raise RuntimeError("Slicer could not import the lesion label map into a segmentation")
    segmentation = node.GetSegmentation()
    terminology = lesion_terminology(segment_name)
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label = segment.GetLabelValue()
        segment.SetName(f"{segment_name} {label}")
        segment.SetColor(*LESION_COLORS[(label - 1) % len(LESION_COLORS)])
        segment.SetTerminology(terminology)
    display = node.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    display.SetSliceIntersectionThickness(2)
    return node


def add_table(scene, rows: list[dict], name: str):
    """Table node with one row per dict (columns = union of keys in first-seen order).

    Numbers become double columns, everything else strings; ``centroid_lps`` is shown as R, A, S columns.
    """
    columns: dict[str, list] = {}
    prepared = []
    for row in rows:
        row = dict(row)
        centroid = row.pop("centroid_lps", None)
        if centroid is not None:
            row["centroid_r_mm"], row["centroid_a_mm"], row["centroid_s_mm"] = -centroid[0], -centroid[1], centroid[2]
        prepared.append(row)
        for key in row:
            columns.setdefault(key, [])
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = node.GetTable()
    for key in columns:
        values = [row.get(key) for row in prepared]
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) or v is None for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(key)
        for value in values:
            if numeric:
                array.InsertNextValue(float("nan") if value is None else float(value))
            else:
                array.InsertNextValue("" if value is None else str(value))
        table.AddColumn(array)
        if key.endswith("_ml"):
            node.SetColumnUnitLabel(key, "ml")
        elif key.endswith("_mm"):
            node.SetColumnUnitLabel(key, "mm")
    node.Modified()
    return node


# ------------------------------------------------------------------------------------------- views
def show_in_slice_views(scene, background=None, foreground=None, segmentation=None, opacity: float = 0.0) -> int:
    """Map as background, input as foreground, lesion outlines; returns the number of views updated.

    Works on the scene's slice composite nodes, so it does nothing (and returns 0) without views (headless).
    """
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
            composite.SetForegroundOpacity(opacity)
    if segmentation is not None and segmentation.GetDisplayNode() is not None:
        segmentation.GetDisplayNode().SetVisibility(True)
    return composites.GetNumberOfItems()


def center_slice_views(scene, point_lps) -> None:
    """Centre every slice view on a point given in LPS millimetres (e.g. a lesion centroid of ``lesions.csv``)."""
    left, posterior, superior = (float(value) for value in point_lps)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, -left, -posterior, superior, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


# ------------------------------------------------------------------------------------- result import
@dataclass
class ImportedNodes:
    """Nodes created (or filled) from one synthesis result."""

    outputs: dict = field(default_factory=dict)       # output name -> vtkMRMLScalarVolumeNode
    uncertainty: dict = field(default_factory=dict)   # output name -> vtkMRMLScalarVolumeNode
    segmentation: object = None                       # vtkMRMLSegmentationNode | None
    table: object = None                              # vtkMRMLTableNode | None

    def all(self) -> list:
        nodes = [*self.outputs.values(), *self.uncertainty.values(), self.segmentation, self.table]
        return [node for node in nodes if node is not None]


def output_name(input_name: str, output: str, task_id: str) -> str:
    """``"<input name> <output> (<task id>)"``."""
    return f"{input_name} {output} ({task_id})"


def _keep_for_rollback(transaction: SceneTransaction, node) -> None:
    """Remember an existing node's name, image and geometry so a rollback restores them."""
    name = node.GetName()
    image = None
    if node.GetImageData() is not None:
        image = vtk.vtkImageData()
        image.DeepCopy(node.GetImageData())
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)

    def restore():
        node.SetName(name)
        node.SetAndObserveImageData(image)
        node.SetIJKToRASMatrix(matrix)

    transaction.on_rollback(restore)


def import_result(scene, task, result, reference_node, output_nodes: dict | None = None,
                  foreground_node=None, show: bool = True) -> ImportedNodes:
    """Create the scene nodes for a synthesis ``result`` of ``task``; all or nothing.

    Args:
        task: the ``tasks.Task`` that produced the result (output display specs, lesion segment name).
        result: anything with ``outputs`` / ``uncertainty`` (name -> ``Volume``), ``lesions`` (``Volume`` or
            None) and ``lesion_table`` (list of dicts), e.g. a ``pipeline.SynthesisResult``.
        reference_node: the input node whose grid the result is on (names, hierarchy, geometry check).
        output_nodes: existing volume nodes to fill per output name (others are created).
        foreground_node: input shown as slice foreground (default: ``reference_node``).
        show: compose the slice views (skipped when the scene has none).
    """
    output_nodes = {key: node for key, node in (output_nodes or {}).items() if node is not None}
    input_name = reference_node.GetName() if reference_node is not None else "MRISynthesis"
    specs = {spec.name: spec for spec in task.outputs}
    imported = ImportedNodes()
    with SceneTransaction(scene) as transaction:
        for name, volume in result.outputs.items():
            spec = specs.get(name)
            node = output_nodes.get(name)
            if node is not None:
                _keep_for_rollback(transaction, node)
            node = volume_to_node(scene, volume, output_name(input_name, name, task.id), node)
            if spec is not None:
                set_display(scene, node, spec.colormap, spec.display_range)
                node.SetAttribute("MRISynthesis.Units", spec.units)
            node.SetAttribute(ROLE_ATTRIBUTE, "output")
            node.SetAttribute("MRISynthesis.Task", task.id)
            place_next_to(scene, node, reference_node)
            imported.outputs[name] = node
        for name, volume in (getattr(result, "uncertainty", None) or {}).items():
            node = volume_to_node(scene, volume, output_name(input_name, f"{name} std", task.id))
            high = float(np.percentile(volume.array, 99.5)) if volume.array.size else 1.0
            set_display(scene, node, UNCERTAINTY_COLORMAP, (0.0, high))
            node.SetAttribute(ROLE_ATTRIBUTE, "uncertainty")
            place_next_to(scene, node, reference_node)
            imported.uncertainty[name] = node
        lesions = getattr(result, "lesions", None)
        if lesions is not None:
            segment_name = task.lesion_rule.segment_name if task.lesion_rule else "Lesion"
            node = add_lesion_segmentation(scene, lesions, reference_node,
                                           output_name(input_name, "lesions", task.id), segment_name)
            node.SetAttribute(ROLE_ATTRIBUTE, "lesions")
            method = ((getattr(result, "summary", None) or {}).get("lesions") or {}).get("method")
            if method:  # which method drew the outlines: the user's mask, the trained segmenter or the rule
                node.SetAttribute(LESION_METHOD_ATTRIBUTE, str(method))
            place_next_to(scene, node, reference_node)
            imported.segmentation = node
        rows = getattr(result, "lesion_table", None)
        if rows:
            node = add_table(scene, rows, output_name(input_name, "lesion statistics", task.id))
            node.SetAttribute(ROLE_ATTRIBUTE, "statistics")
            place_next_to(scene, node, reference_node)
            imported.table = node
        if show and imported.outputs:
            show_in_slice_views(scene, next(iter(imported.outputs.values())),
                                foreground_node or reference_node, imported.segmentation)
        elif show and imported.segmentation is not None:  # a lesions-only task: the input under its outlines
            show_in_slice_views(scene, foreground_node or reference_node, None, imported.segmentation)
    return imported


def segmentation_to_volume(scene, segmentation_node, reference_node) -> Volume:
    """Label map ``Volume`` (n-th segment -> label n) of a segmentation, on the reference node's exact grid."""
    if segmentation_node is None or reference_node is None:
        raise InputError("a segmentation and a reference volume are needed", "lesions")
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    with SceneTransaction(scene) as transaction:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__mrisynthesis_export")
        try:
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, reference_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            if not ok:
                raise InputError("could not be converted to a label map", segmentation_node.GetName())
            volume = node_to_volume(labelmap)
        finally:
            transaction.rollback()  # the temporary label map never stays in the scene
    volume.array = volume.array.astype(np.uint16)
    return volume
