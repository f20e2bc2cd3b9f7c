"""All-or-nothing scene changes: nodes and subject-hierarchy items created inside a ``SceneTransaction`` are
removed again when the block raises, so an error or a cancel leaves the scene exactly as it was.

Imports ``slicer`` like ``mrml.py`` (it is part of the MRML bridge); takes the scene as an argument.
"""

from __future__ import annotations

import contextlib

import slicer
import vtk


def hierarchy_items(scene) -> set[int]:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return set()
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    return {items.GetId(index) for index in range(items.GetNumberOfIds())}


def scene_node_ids(scene) -> list[str]:
    """IDs of all nodes in the scene, in scene order."""
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


class SceneTransaction(contextlib.AbstractContextManager):
    """Create everything or nothing: on an exception, nodes and subject-hierarchy items added inside the
    ``with`` block are removed and registered undo callbacks (for modified existing nodes) run in reverse."""

    def __init__(self, scene):
        self.scene = scene
        self._undo: list = []

    def __enter__(self) -> "SceneTransaction":
        self._nodes_before = set(scene_node_ids(self.scene))
        self._items_before = hierarchy_items(self.scene)
        return self

    def on_rollback(self, callback) -> None:
        """Register ``callback()`` to undo a change of an existing node."""
        self._undo.append(callback)

    def rollback(self) -> None:
        for callback in reversed(self._undo):
            with contextlib.suppress(Exception):
                callback()
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        new_items = hierarchy_items(self.scene) - self._items_before
        if hierarchy is not None:
            for item in sorted(new_items, reverse=True):
                hierarchy.RemoveItem(item, False, False)
        for node_id in reversed(scene_node_ids(self.scene)):
            if node_id not in self._nodes_before:
                node = self.scene.GetNodeByID(node_id)
                if node is not None:
                    self.scene.RemoveNode(node)

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            self.rollback()
        return False
