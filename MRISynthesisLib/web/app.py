"""The browser front end: trame-slicer slice views on Slicer's MRML, bound to a ``WebSession``.

The page has no synthesis logic: loading goes through the pipeline's checks (``WebSession.load_*``), runs
through the same JSON-lines worker as the Slicer module, and results become the same MRML nodes
(``mrml.import_result``: colour maps, uncertainty, lesion segmentation, statistics table).
Start it with ``mrisynthesis serve``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from trame.app import TrameApp
from trame.app.file_upload import ClientFile
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from .. import mrml
from ..devices import query_devices
from ..errors import InputError
from ..tasks import QUALITY_STEPS, TASKS, get_task
from ..worker import progress_text
from . import ui
from .session import WebSession

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.25
MAX_INPUTS = 4  # input selectors on the page (missing-contrast has four)


def table_for_page(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Vuetify data-table headers and rows for the per-lesion table: the columns of ``lesions.csv``."""
    keys = list(rows[0]) if rows else []
    headers = [{"title": key.replace("_", " "), "key": key} for key in keys]

    def cell(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, (list, tuple)):
            return ", ".join(f"{item:.1f}" if isinstance(item, float) else str(item) for item in value)
        return value

    return headers, [{key: cell(row.get(key)) for key in keys} for row in rows]


class SynthesisWebApp(TrameApp):
    """``mrisynthesis serve``: one scene and one synthesis at a time per server."""

    def __init__(self, server=None, session_options: dict | None = None, query_gpus: bool = True):
        super().__init__(server, client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout("slices", Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(),
            ViewLayoutDefinition.sagittal_view()]))
        self.layout_manager.set_layout("slices")
        options = dict(session_options or {})
        self.session = WebSession(self.slicer_app.scene, **options)
        self.server.serve["downloads"] = str(self.session.downloads_dir)
        self._upload: list[dict] = []
        self._lesions: dict = {}
        self._init_state()
        self.state.change("task_id")(self.on_task_changed)
        self.state.change("view_volume")(self.show_in_views)
        self.state.change("show_lesions")(self.show_lesion_outlines)
        self.ui = ui.build(self, MAX_INPUTS)
        if query_gpus:
            self.ctrl.on_server_ready.add(lambda **_: asyncio.ensure_future(self._query_devices()))

    # ----------------------------------------------------------------------------------------- state
    def _init_state(self) -> None:
        state = self.state
        state.trame__title = "MRISynthesis"
        state.tasks = [{"title": f"{task.title} ({task.id})", "value": task.id} for task in TASKS.values()]
        state.task_id = "myelin-psr"
        state.qualities = list(QUALITY_STEPS)
        state.quality, state.samples, state.seed = "balanced", 0, 0
        state.devices = [{"title": "auto (GPU if available)", "value": "auto"}, {"title": "CPU", "value": "cpu"}]
        state.device = "auto"
        state.formats = [{"title": "NIfTI (.nii.gz)", "value": "nii.gz"}, {"title": "NRRD (.nrrd)", "value": "nrrd"}]
        state.output_format = "nii.gz"
        state.max_upload_bytes = self.session.max_upload_bytes
        state.data_files, state.data_choice = self.session.data_files(), []
        state.volumes = []
        state.view_volume, state.show_lesions = None, True
        state.input_names = [""] * MAX_INPUTS
        state.input_labels = [""] * MAX_INPUTS
        for slot in range(MAX_INPUTS):
            state[f"input_{slot}"] = None
        state.busy_loading = False
        state.running, state.progress, state.status = False, 0, "Load volumes, choose a task, press Run."
        state.run_state = "idle"  # idle | running | done | error | cancelled
        state.error = ""
        state.log = []
        state.lesion_headers, state.lesion_rows = [], []
        state.downloads = []
        state.result_names = []
        self._refresh_inputs()

    def _log(self, text: str) -> None:
        logger.info(text)
        self.state.log = [*self.state.log[-199:], text]

    def _refresh_volumes(self) -> None:
        self.state.volumes = [{"title": volume["name"], "value": volume["id"]} for volume in self.session.volumes()]

    def _refresh_inputs(self) -> None:
        """Input selectors of the chosen task, auto-assigned by name like the Slicer module."""
        task = get_task(self.state.task_id)
        specs = list(task.inputs[:MAX_INPUTS])
        current = {self.state.input_names[slot]: self.state[f"input_{slot}"] for slot in range(MAX_INPUTS)}
        chosen = self.session.auto_assign(task, self.session.volumes(), current)
        self.state.input_names = [spec.name for spec in specs] + [""] * (MAX_INPUTS - len(specs))
        self.state.input_labels = [f"{spec.name}{'' if spec.required else ' (optional)'}" for spec in specs] + \
                                  [""] * (MAX_INPUTS - len(specs))
        for slot in range(MAX_INPUTS):
            self.state[f"input_{slot}"] = chosen.get(specs[slot].name) if slot < len(specs) else None

    def on_task_changed(self, **_) -> None:
        self._refresh_inputs()

    async def _query_devices(self) -> None:
        """GPUs from a worker process (torch never loads in the server), added to the device list."""
        loop = asyncio.get_running_loop()
        try:
            devices = await loop.run_in_executor(None, query_devices, self.session.python, self.session.launcher)
        except Exception as error:  # auto and CPU stay usable; say why GPUs are not listed
            logger.warning("device query failed: %s", error)
            return
        extra = [{"title": device["label"], "value": device["id"]} for device in devices if device["id"] != "cpu"]
        if extra:
            with self.state:
                self.state.devices = [*self.state.devices, *extra]

    # --------------------------------------------------------------------------------------- loading
    def _loaded(self, nodes: list, source: str) -> None:
        self.state.error = ""
        self._refresh_volumes()
        self._refresh_inputs()
        if nodes:
            self.state.view_volume = nodes[-1].GetID()
            self.show_in_views(nodes[-1].GetID())  # now, so that reset_views fits it (the state change comes later)
            self.slicer_app.display_manager.reset_views()
        self._log(f"Loaded {', '.join(node.GetName() for node in nodes)} ({source}).")

    def _fail(self, message: str) -> None:
        self.state.error = message
        self.state.status = message
        self._log(message)

    def upload_chunk(self, files: list[dict]) -> None:
        """Chunks from the page's file input (``chunk_loader.js``); an empty list ends the upload. A file above
        the limit keeps only its name and size (the page refuses it first; the server does not trust the page)."""
        if files:
            limit = self.session.max_upload_bytes
            self._upload.extend({**file, "content": b""} if int(file.get("size") or 0) > limit else file
                                for file in files)
            return
        received, self._upload = self._upload, []
        try:
            for file in received:
                self.session.check_upload(file.get("name", ""), int(file.get("size") or 0))
            self._loaded(self.session.load_uploads([(upload.name, upload.content or b"")
                                                    for upload in map(ClientFile, received)]), "upload")
        except InputError as error:
            self._fail(f"Not loaded: {error}")

    def load_data(self) -> None:
        try:
            self._loaded(self.session.load_data(list(self.state.data_choice or [])), "server data folder")
        except InputError as error:
            self._fail(f"Not loaded: {error}")

    def report_client_error(self, message: str) -> None:
        self._fail(f"Not loaded: {message}")

    # ------------------------------------------------------------------------------------------- run
    def run_or_cancel(self) -> None:
        if self.session.running:
            self._finish(self.session.cancel())
            return
        inputs = {self.state.input_names[slot]: self.state[f"input_{slot}"]
                  for slot in range(MAX_INPUTS) if self.state.input_names[slot]}
        try:
            self.session.start(self.state.task_id, inputs, self.state.quality, int(self.state.samples or 0),
                               self.state.device, int(self.state.seed or 0), self.state.output_format)
        except (InputError, ValueError) as error:
            self._fail(f"Cannot start: {error}")
            return
        self.state.update({"running": True, "run_state": "running", "progress": 0, "error": "",
                           "status": "Starting..."})
        self._log(f"Started {self.state.task_id} ({self.state.quality}, device {self.state.device}).")
        asyncio.ensure_future(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Progress of one run; ends when it finishes or is cancelled (a newer run gets its own loop)."""
        process = self.session.process
        while self.session.process is process:
            with self.state:
                for message in self.session.poll():
                    if "overall" in message:
                        self.state.progress = round(float(message["overall"]), 1)
                        self.state.status = progress_text(message)
                while process.log:
                    self._log("worker: " + process.log.popleft())
                if self.session.finished:
                    self._finish(self.session.finish())
                    return
            await asyncio.sleep(POLL_SECONDS)

    def _finish(self, finished) -> None:
        self.state.running = False
        self.state.run_state = finished.status
        self.state.status = finished.message
        self._log(finished.message)
        if finished.status == "error":
            self.state.error = finished.message
            return
        if finished.status != "done":
            return
        self.state.progress = 100
        self._lesions = {row.get("id"): row for row in finished.lesion_rows}
        self.state.lesion_headers, self.state.lesion_rows = table_for_page(finished.lesion_rows)
        self.state.result_names = [self.slicer_app.scene.GetNodeByID(node_id).GetName()
                                   for node_id in finished.node_ids]
        self.state.downloads = [{"name": name, "url": f"downloads/{finished.run_id}/{name}"}
                                for name in finished.downloads]
        self._refresh_volumes()
        scene = self.slicer_app.scene
        shown = [node_id for node_id in finished.node_ids
                 if scene.GetNodeByID(node_id).GetAttribute(mrml.ROLE_ATTRIBUTE) == "output"]
        if shown:  # import_result put the map in the views; the selector says so
            self.state.view_volume = shown[0]
        self.state.show_lesions = True
        self.slicer_app.display_manager.reset_views()

    # ------------------------------------------------------------------------------------------ views
    def show_in_views(self, view_volume=None, **_) -> None:
        """Background of the slice views (the map, its uncertainty or an input)."""
        node = self.slicer_app.scene.GetNodeByID(view_volume) if view_volume else None
        if node is not None:
            self.slicer_app.display_manager.show_volume_in_slice_background(node)

    def show_lesion_outlines(self, show_lesions=True, **_) -> None:
        nodes = self.slicer_app.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for index in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(index)
            if node.GetAttribute(mrml.ROLE_ATTRIBUTE) == "lesions" and node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetVisibility(bool(show_lesions))

    def jump_to_lesion(self, lesion_id) -> None:
        """Centre every slice view on a lesion (a click on its table row)."""
        row = self._lesions.get(lesion_id)
        if row is None or not row.get("centroid_lps"):
            return
        mrml.center_slice_views(self.slicer_app.scene, row["centroid_lps"])
        self.state.status = f"Lesion {lesion_id}: {row.get('volume_ml')} mL"


def serve(host: str = "127.0.0.1", port: int = 0, data_dir: str | Path | None = None,
          downloads_dir: str | Path | None = None, max_upload_mb: float | None = None, open_browser: bool = False,
          query_gpus: bool = True) -> None:
    """Build the app and run its server until interrupted."""
    import tempfile

    temporary = None if downloads_dir else tempfile.mkdtemp(prefix="mrisynthesis-web-")
    options = {"downloads_dir": downloads_dir or temporary, "data_dir": data_dir}
    if max_upload_mb is not None:
        options["max_upload_mb"] = max_upload_mb
    app = SynthesisWebApp(session_options=options, query_gpus=query_gpus)
    try:
        app.server.start(host=host, port=port, open_browser=open_browser)
    finally:
        if app.session.running:
            app.session.cancel()
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
