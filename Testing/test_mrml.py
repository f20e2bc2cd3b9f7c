"""The MRML bridge against the real Slicer MRML library (``slicer-core`` wheel), scene set up like trame-slicer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import slicer  # the slicer-core wheel: a test dependency, so a missing install fails loudly
import vtk

from MRISynthesisLib import mrml
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.tasks import get_task
from MRISynthesisLib.volume import Volume, read_volume


@pytest.fixture()
def scene():
    """A scene with application, colour, volumes, segmentations and subject-hierarchy logics."""
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtkCollection())
    app.SetViewLogics(vtkCollection())
    logics = {
        "Colors": slicer.vtkMRMLColorLogic(),
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "SubjectHierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
    scene.app_logic_keepalive = (app, logics)  # keep the logics alive as long as the scene
    yield scene
    scene.Clear(True)


def oblique_direction(degrees=(20.0, -35.0, 50.0)) -> tuple[float, ...]:
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx).ravel())


def make_volume(shape=(6, 7, 8), seed=0, dtype=np.float32) -> Volume:
    array = np.random.default_rng(seed).random(shape).astype(dtype)
    return Volume(array, origin=(12.5, -40.0, 7.25), spacing=(0.7, 1.3, 2.5), direction=oblique_direction())


def make_result(reference: Volume, with_lesions=True):
    psr = reference.with_array(np.clip(reference.array * 0.2, 0, 0.2).astype(np.float32))
    std = reference.with_array(np.full(reference.shape, 0.01, np.float32))
    labels = np.zeros(reference.shape, np.uint16)
    labels[1:3, 1:3, 1:3] = 1
    labels[4, 5, 6] = 2
    rows = [
        {"id": 1, "volume_ml": 0.0182, "mean_psr": 0.08, "nawm_psr": 0.12, "ratio": 0.667, "centroid_lps": [1.0, 2.0, 3.0]},
        {"id": 2, "volume_ml": 0.0023, "mean_psr": 0.05, "nawm_psr": 0.12, "ratio": 0.417, "centroid_lps": [-4.0, 5.5, -6.0]},
    ]
    return SimpleNamespace(outputs={"psr": psr}, uncertainty={"psr": std},
                           lesions=reference.with_array(labels) if with_lesions else None,
                           lesion_table=rows if with_lesions else [])


def add_reference(scene, volume: Volume, name="sub01 FLAIR"):
    node = mrml.volume_to_node(scene, volume, name)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.GetSceneItemID(), "Study 1")
    hierarchy.CreateItem(study, node)
    return node, study


def snapshot(scene):
    return mrml.scene_node_ids(scene), sorted(mrml.hierarchy_items(scene))


def test_geometry_matches_simpleitk_oblique_anisotropic(scene):
    volume = make_volume()
    node = mrml.volume_to_node(scene, volume, "oblique")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    image = volume.to_sitk()
    for index in [(0, 0, 0), (7, 6, 5), (3, 1, 4)]:
        ras = matrix.MultiplyPoint((*index, 1.0))[:3]
        lps = image.TransformIndexToPhysicalPoint(index)  # independent reference: ITK, LPS
        np.testing.assert_allclose(ras, (-lps[0], -lps[1], lps[2]), atol=1e-6)
    np.testing.assert_allclose(node.GetSpacing(), volume.spacing, atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), volume.array)
    back = mrml.node_to_volume(node)
    assert back.same_grid(volume, tolerance=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


def test_node_to_volume_applies_linear_parent_transform_and_vector_channels(scene):
    volume = make_volume()
    node = mrml.volume_to_node(scene, volume, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # +10 mm towards R = -10 mm in LPS x
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = mrml.node_to_volume(node)
    np.testing.assert_allclose(np.subtract(moved.origin, volume.origin), (-10.0, 0.0, 0.0), atol=1e-9)

    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "ctp")
    frames = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)  # (c, z, y, x)
    slicer.util.updateVolumeFromArray(vector, np.moveaxis(frames, 0, -1).copy())
    series = mrml.node_to_volume(vector)
    assert series.channels == 3 and series.shape == (4, 5, 6)
    np.testing.assert_array_equal(series.array, frames)


def test_import_result_creates_named_displayed_placed_nodes(scene):
    task = get_task("myelin-psr")
    reference = make_volume()
    reference_node, study = add_reference(scene, reference)
    result = make_result(reference)
    nodes = mrml.import_result(scene, task, result, reference_node)

    psr = nodes.outputs["psr"]
    assert psr.GetName() == "sub01 FLAIR psr (myelin-psr)"
    assert mrml.node_to_volume(psr).same_grid(reference, tolerance=1e-9)
    display = psr.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Inferno"
    assert display.GetAutoWindowLevel() == 0
    assert display.GetWindow() == pytest.approx(0.2) and display.GetLevel() == pytest.approx(0.1)
    std = nodes.uncertainty["psr"]
    assert std.GetName() == "sub01 FLAIR psr std (myelin-psr)"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(std), 0.01)

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in nodes.all():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, node.GetName()

    segmentation = nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    segments = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i) for i in range(2)}
    assert set(segments) == {"MS lesion 1", "MS lesion 2"}
    assert segments["MS lesion 1"].GetTerminology() == mrml.lesion_terminology("MS lesion")
    assert_in_slicer_terminology_lists(segments["MS lesion 1"].GetTerminology())
    assert segments["MS lesion 1"].GetColor() != segments["MS lesion 2"].GetColor()
    assert nodes.segmentation.GetDisplayNode().GetVisibility2DOutline()
    assert not nodes.segmentation.GetDisplayNode().GetVisibility2DFill()
    labels = mrml.segmentation_to_volume(scene, nodes.segmentation, reference_node)
    voxels = {name: int(np.count_nonzero(labels.array == i + 1))
              for i, name in enumerate(segmentation.GetNthSegment(j).GetName() for j in range(2))}
    assert voxels == {"MS lesion 1": 8, "MS lesion 2": 1}

    table = nodes.table
    assert table.GetNumberOfRows() == 2
    columns = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert columns == ["id", "volume_ml", "mean_psr", "nawm_psr", "ratio",
                       "centroid_r_mm", "centroid_a_mm", "centroid_s_mm"]
    assert float(table.GetCellText(1, columns.index("ratio"))) == pytest.approx(0.417)
    assert float(table.GetCellText(1, columns.index("centroid_r_mm"))) == pytest.approx(4.0)  # LPS -> RAS
    assert table.GetColumnUnitLabel("volume_ml") == "ml"


def test_inferno_built_when_missing_is_perceptually_ordered(scene):
    assert scene.GetFirstNodeByName("Inferno") is None  # slicer-core ships no Inferno
    color = scene.GetNodeByID(mrml.color_node_id(scene, "Inferno"))
    rgb = np.array([color.GetLookupTable().GetTableValue(i)[:3] for i in range(color.GetNumberOfColors())])
    luminance = rgb @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luminance) > 0)
    assert mrml.color_node_id(scene, "Inferno") == color.GetID()  # built once, then reused
    assert mrml.color_node_id(scene, "Grey") == "vtkMRMLColorTableNodeGrey"


def test_storage_round_trip_nrrd_and_seg_nrrd(scene, tmp_path):
    task = get_task("myelin-psr")
    reference = make_volume()
    reference_node, _ = add_reference(scene, reference)
    nodes = mrml.import_result(scene, task, make_result(reference), reference_node)

    path = str(tmp_path / "psr.nrrd")
    writer = slicer.vtkMRMLVolumeArchetypeStorageNode()
    writer.SetFileName(path)
    assert writer.WriteData(nodes.outputs["psr"])
    from_disk = read_volume(path)  # SimpleITK reads LPS: the flip must have been undone on write
    assert from_disk.same_grid(reference, tolerance=1e-5)
    np.testing.assert_allclose(from_disk.array, make_result(reference).outputs["psr"].array)
    reread = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(path)
    assert reader.ReadData(reread)
    assert mrml.node_to_volume(reread).same_grid(reference, tolerance=1e-5)

    seg_path = str(tmp_path / "lesions.seg.nrrd")
    seg_writer = slicer.vtkMRMLSegmentationStorageNode()
    seg_writer.SetFileName(seg_path)
    assert seg_writer.WriteData(nodes.segmentation)
    seg_reread = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg_reader = slicer.vtkMRMLSegmentationStorageNode()
    seg_reader.SetFileName(seg_path)
    assert seg_reader.ReadData(seg_reread)
    names = sorted(seg_reread.GetSegmentation().GetNthSegment(i).GetName()
                   for i in range(seg_reread.GetSegmentation().GetNumberOfSegments()))
    assert names == ["MS lesion 1", "MS lesion 2"]
    labels = mrml.segmentation_to_volume(scene, seg_reread, reference_node)
    assert labels.same_grid(reference, tolerance=1e-5)
    assert np.count_nonzero(labels.array) == 9


def test_failing_import_leaves_scene_unchanged(scene):
    task = get_task("myelin-psr")
    reference = make_volume()
    reference_node, _ = add_reference(scene, reference)
    existing = mrml.volume_to_node(scene, reference.with_array(np.full(reference.shape, 7.0, np.float32)), "mine")
    before = snapshot(scene)
    result = make_result(reference)
    shifted = Volume(result.lesions.array, (0.0, 0.0, 0.0), reference.spacing, reference.direction)
    result.lesions = shifted  # wrong grid: fails after the output volumes were already created
    with pytest.raises(InputError, match="reference grid"):
        mrml.import_result(scene, task, result, reference_node, output_nodes={"psr": existing})
    assert snapshot(scene) == before
    assert existing.GetName() == "mine"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(existing), 7.0)

    bad = make_result(reference, with_lesions=False)
    bad.uncertainty = {"psr": reference.with_array(np.zeros((2, *reference.shape), np.float32))}  # 4D: refused
    with pytest.raises(InputError):
        mrml.import_result(scene, task, bad, reference_node)
    assert snapshot(scene) == before


def test_slice_views_composed_only_when_views_exist(scene):
    task = get_task("myelin-psr")
    reference = make_volume()
    reference_node, _ = add_reference(scene, reference)
    nodes = mrml.import_result(scene, task, make_result(reference), reference_node)  # headless: no views
    assert mrml.show_in_slice_views(scene, nodes.outputs["psr"], reference_node) == 0
    composite = slicer.vtkMRMLSliceCompositeNode()
    composite.SetLayoutName("Red")
    scene.AddNode(composite)
    assert mrml.show_in_slice_views(scene, nodes.outputs["psr"], reference_node, nodes.segmentation, 0.3) == 1
    assert composite.GetBackgroundVolumeID() == nodes.outputs["psr"].GetID()
    assert composite.GetForegroundVolumeID() == reference_node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ terminology
# Entries that exist in 3D Slicer's terminology lists (Modules/Loadable/Terminologies/Resources of
# Slicer/Slicer, read for this test): context -> category code -> type codes; anatomic context -> regions.
SLICER_TERMINOLOGY = {
    "Segmentation category and type - 3D Slicer General Anatomy list": {   # ...-SlicerGeneralAnatomy.json
        "SCT^49755003": {"SCT^75753009", "SCT^367643001", "SCT^79654002", "SCT^55584005", "SCT^50960005",
                         "SCT^4147007", "SCT^6574001"},  # clot, cyst, edema, embolus, hemorrhage, mass, necrosis
    },
    "Segmentation category and type - DICOM master list": {               # ...-DICOM-Master.json
        "SCT^49755003": {"SCT^4147007", "SCT^27925004", "SCT^367643001", "SCT^75753009", "SCT^55584005",
                         "SCT^79654002", "SCT^50960005", "SCT^23583003", "SCT^44132006", "SCT^6574001",
                         "SCT^86049000", "SCT^14799000", "SCT^108369006"},
    },
}
SLICER_ANATOMY = {"Anatomic codes - DICOM master list": {"SCT^68523003", "SCT^21483005", "SCT^40146001"}}


def assert_in_slicer_terminology_lists(entry: str) -> None:
    context, category, kind, _modifier, anatomic_context, region, _region_modifier = entry.split("~")
    code = lambda text: "^".join(text.split("^")[:2])  # noqa: E731 (scheme^value, the meaning is free text)
    assert kind and code(kind) in SLICER_TERMINOLOGY[context][code(category)], entry
    if code(region) != "^":
        assert code(region) in SLICER_ANATOMY[anatomic_context], entry


@pytest.mark.parametrize("segment_name", ["MS lesion", "Infarct core", "FLAIR hyperintensity", "Lesion"])
def test_lesion_terminology_uses_entries_that_exist_in_slicer(segment_name):
    entry = mrml.lesion_terminology(segment_name)
    assert_in_slicer_terminology_lists(entry)
    assert len(entry.split("~")) == 7  # context~category~type~modifier~anatomic context~region~modifier


def test_each_task_lesion_gets_a_distinct_fitting_type():
    from MRISynthesisLib.tasks import TASKS

    kinds = {task.lesion_rule.segment_name: mrml.lesion_terminology(task.lesion_rule.segment_name).split("~")[2]
             for task in TASKS.values() if task.lesion_rule}
    assert kinds["Infarct core"].endswith("Necrosis") and kinds["MS lesion"].endswith("Inflammation")

