"""The page layout (Vuetify 3): a drawer with load / task / run controls, the slice views, results below.

Only widgets and bindings: every action calls a method of ``SynthesisWebApp``. CSS classes starting with
``mrs-`` name the elements the browser tests drive.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

# Checks sizes in the page (before any byte is sent), then streams the files in chunks (trame-slicer's
# chunk_loader.js) to ``upload_chunk``; the server checks the sizes again.
UPLOAD_JS = """
const files = Array.from($event.target.files || []);
const big = files.find((file) => file.size > max_upload_bytes);
if (big) {
  trame.trigger('{error}', [big.name + ': ' + Math.round(big.size / 1048576) + ' MB is more than the upload limit of '
                + Math.round(max_upload_bytes / 1048576) + ' MB']);
} else if (files.length) {
  busy_loading = true;
  window.load_files_by_chunks($event.target.files, { trigger_name: '{chunk}' })
    .finally(() => { busy_loading = false; });
}
"""


def build(app, max_inputs: int) -> SinglePageWithDrawerLayout:
    server = app.server
    upload_js = UPLOAD_JS.replace("{error}", server.trigger_name(app.report_client_error)) \
                         .replace("{chunk}", server.trigger_name(app.upload_chunk))
    layout = SinglePageWithDrawerLayout(server, width=360)
    with layout:
        layout.title.set_text("MRISynthesis")
        with layout.toolbar:
            v3.VSpacer()
            html.Span("{{ status }}", classes="mrs-status text-body-2 mr-4")
        with layout.drawer:
            _load_card(app, upload_js)
            _task_card(app, max_inputs)
        with layout.content:
            with v3.VContainer(fluid=True, classes="pa-0 fill-height d-flex flex-column"):
                v3.VAlert(v_if=("error",), text=("error",), type="error", density="compact", closable=True,
                          classes="mrs-error ma-2", click_close="error = ''")
                with html.Div(classes="d-flex align-center px-2", style="width: 100%; gap: 16px;"):
                    v3.VSelect(label="Shown in the views", items=("volumes",), v_model=("view_volume",),
                               density="compact", hide_details=True, classes="mrs-view-volume",
                               style="max-width: 420px;")
                    v3.VSwitch(label="Lesion outlines", v_model=("show_lesions",), density="compact",
                               hide_details=True, color="primary", classes="mrs-show-lesions")
                with html.Div(style="height: 60vh; min-height: 360px; width: 100%;", classes="mrs-views"):
                    app.layout_manager.initialize_layout_grid(layout)
                _results(app)
    return layout


def _load_card(app, upload_js: str) -> None:
    with v3.VCard(title="1. Load volumes", variant="flat", classes="mb-2"):
        with v3.VCardText():
            v3.VFileInput(label="Upload NIfTI / NRRD / MHA", multiple=True, density="compact", hide_details=True,
                          prepend_icon="mdi-upload", classes="mrs-upload", disabled=("busy_loading",),
                          change=upload_js)
            v3.VProgressLinear(v_if=("busy_loading",), indeterminate=True, classes="mt-1")
            with html.Div(v_if=("data_files.length",), classes="mt-2"):
                v3.VSelect(label="Files on the server (--data)", items=("data_files",), v_model=("data_choice",),
                           multiple=True, chips=True, density="compact", hide_details=True, classes="mrs-data")
                v3.VBtn("Load", click=app.load_data, size="small", classes="mt-1 mrs-load-data",
                        disabled=("!data_choice.length",))
            html.Div("Loaded: {{ volumes.map((v) => v.title).join(', ') || 'nothing yet' }}",
                     classes="text-caption mt-2 mrs-volumes")


def _task_card(app, max_inputs: int) -> None:
    with v3.VCard(title="2. Synthesize", variant="flat"):
        with v3.VCardText():
            v3.VSelect(label="Task", items=("tasks",), v_model=("task_id",), density="compact", classes="mrs-task",
                       disabled=("running",))
            for slot in range(max_inputs):
                v3.VSelect(v_if=(f"input_names[{slot}]",), label=(f"input_labels[{slot}]",), items=("volumes",),
                           v_model=(f"input_{slot}",), clearable=True, density="compact",
                           classes=f"mrs-input mrs-input-{slot}", disabled=("running",))
            v3.VSelect(label="Quality preset", items=("qualities",), v_model=("quality",), density="compact",
                       disabled=("running",))
            v3.VTextField(label="Samples (0 = from the preset)", v_model_number=("samples",), type="number",
                          min=0, density="compact", disabled=("running",))
            v3.VSelect(label="Device", items=("devices",), v_model=("device",), density="compact",
                       disabled=("running",))
            v3.VSelect(label="Download format", items=("formats",), v_model=("output_format",), density="compact",
                       disabled=("running",))
            v3.VBtn("{{ running ? 'Cancel' : 'Run' }}", click=app.run_or_cancel, block=True,
                    color=("running ? 'error' : 'primary'",), classes="mrs-run")
            v3.VProgressLinear(model_value=("progress",), height=14, color="primary", classes="mt-2 mrs-progress",
                               v_show=("running || run_state === 'done'",))
            with v3.VExpansionPanels(classes="mt-2"):
                with v3.VExpansionPanel(title="Log"):
                    with v3.VExpansionPanelText():
                        html.Pre("{{ log.join('\\n') }}", classes="text-caption mrs-log",
                                 style="white-space: pre-wrap; max-height: 240px; overflow-y: auto;")


def _results(app) -> None:
    jump = app.server.trigger_name(app.jump_to_lesion)
    with html.Div(v_if=("run_state === 'done'",), classes="pa-2 mrs-results",
                  style="width: 100%; flex: 1 1 auto; overflow-y: auto;"):
        html.Div("Created: {{ result_names.join(' · ') }}", classes="text-body-2 mrs-result-names")
        with html.Div(classes="my-1"):
            html.Span("Download: ", classes="text-body-2")
            html.A("{{ file.name }}", v_for="file in downloads", key="file.url", href=("file.url",),
                   download=True, classes="mr-3 mrs-download")
        html.Div("Lesions (click a row to centre the views on it):", v_if=("lesion_rows.length",),
                 classes="text-body-2 mt-2")
        v3.VDataTable(v_if=("lesion_rows.length",), headers=("lesion_headers",), items=("lesion_rows",),
                      density="compact", items_per_page=10, hover=True, classes="mrs-lesion-table",
                      raw_attrs=[f'@click:row="(event, row) => trigger(\'{jump}\', [row.item.id])"'])
