"""The Hybrid Audio dashboard: the Workflow page, then Generate, Assemble, Campaign, Cache,
Pronunciation, Rotation and Storage.

Run it alone with `panel serve app/dashboard.py`, or mounted at `/dashboard` by the API
server (`panel.io.fastapi.add_applications`), where it shares the API's workspace (a job
started here shows in `/jobs`) and gives the audio players the API's audio URLs. Views
are thin `pn.viewable.Viewer`s over the core objects of `hybrid_audio.workspace`; this
module only wires them into tabs. It never computes anything itself.

Hooks for browser tests (stable names and CSS classes):

- Tabs (`.dashboard-tabs`): "Workflow" (first), "Generate", "Assemble", "Campaign",
  "Cache", "Pronunciation", "Rotation", "Storage".
- Workflow (`.workflow`): intro `.workflow-intro`; one card per step `.workflow-step-1` …
  `.workflow-step-6` (contract, datasets, stems, message, proof, export), each with
  "Open the <page> page →" buttons (`.open-page`) that switch tabs; step 3 has the
  Generate page's "Name" input and "Generate name" (`.workflow-generate`); step 4 the
  Assemble page's "Template", "Developer", "Script", join mode (`.join-mode`) and
  "Assemble message" (`.workflow-assemble`; the name slot takes step 3's name); step 5
  `.workflow-proof` and "Re-verify from disk"; step 6 the message's Download button.
- Generate: buttons named "Generate name" / "Generate developer" / "Generate script"
  (`.generate-name`, `.generate-developer`, `.generate-script`); text inputs named "Name",
  "Developer"; contract widgets in `.contract` (they edit a draft), button "Apply contract"
  (`.apply-contract`) → confirmation `.contract-confirm` ("makes N cached stems
  incompatible") with "Confirm change" / "Cancel change"; the sound widgets are
  "Normalise loudness" (`.loudness-on`; off → no loudness target), "Loudness target
  (LUFS)" (`.loudness-target`), "True-peak ceiling (dBTP)", "Edge fade (ms)"; active
  contract `.contract-summary` (names the processing); result text
  `.generate-result` (contains "(new)" or "(cached)" and the sha256); waveform
  `.waveform.stem-waveform`; player `.audio-player`; "Download stem (WAV)"
  (`.download-stem`). Script choices read "key — phrase". Any kind (kinds.json too):
  "Kind" (`.stem-kind`), "Text" (`.stem-text`; a key for a key → phrase kind), "Generate"
  (`.generate-stem`).
- Assemble: select "Template", preview `.template-preview`; inputs "Name", "Developer",
  "Script", and one text input per slot of an added kind in the chosen template
  (`.slot-<kind>`); one "Next <stream>" button per rotation stream (`.next-<stream>`:
  name, developer, script, pair and added rotation kinds),
  "Assemble" (`.assemble`), join mode (`.join-mode`: "exact" | "hybrid", the template's by
  default), "Re-verify from disk" (`.reverify`), "Download message (WAV)"
  (`.download-message`); what "✓ exact" proves `.exact-means`; result Markdown
  `.assemble-result` (contains "verified" when every byte checks, "NOT verified" else);
  waveform `.waveform` (Bokeh: shaded segment spans with labels); player `.audio-player`
  (an `<audio>` whose src is `/assemble/outputs/{id}/audio` under the API); byte-diff
  Tabulator `.byte-diff` (columns #, stem, kind, byte range, source sha256, verdict =
  "✓ exact" | "✗ first differing offset N"); past outputs Tabulator `.outputs-table`
  (click a row to load it).
- Campaign: source choice ("Upload a list (CSV/JSON)" | "Next N pairs of the rotation"),
  file input `.campaign-upload`, "Pairs", "Seed", "Template", join; preview
  `.campaign-preview` (first rows `.campaign-preview-table`, refused rows
  `.campaign-preview-problems`) and plan `.campaign-plan` ("N distinct stems: X cached, Y
  to make"); "Run campaign" (`.campaign-run`), "Cancel", "Resume"; `.campaign-progress`
  (bar, status `.campaign-status`: state, done/total, %, ETA); `.campaign-results`: search
  `.campaign-search`, "◀ Previous"/"Next ▶", messages Tabulator `.campaign-messages`
  (click a row: player and its download link `.campaign-message-download`; "Open proof"
  `.campaign-open-proof` → the Assemble page shows that output, with its Download),
  refused/failed rows `.campaign-problems`, the zip link `.campaign-download`
  (`/campaigns/{id}/export.zip`, streamed by the API); past campaigns `.campaign-list`
  (click one to show it).
- Cache: totals `.cache-totals`; search box `.stems-search` (stem id or text); stems
  Tabulator `.stems-table` (checkbox selection, count in `.stems-selected`); buttons
  "Invalidate" (`.invalidate`), "Bulk generate"
  (`.bulk-generate`), "Cancel job" (`.cancel-job`), "Verify cache" (`.verify-cache`);
  text areas "Names", "Developers"; progress bar `.bulk-progress`; job status
  `.bulk-status` (state, done/total, ETA); audit text `.cache-audit`; ▶ plays a stem
  (`.cache-player`) with its "Download stem (WAV)" (`.download-stem`); the table has
  "LUFS before", "LUFS after", "peak dBTP", "gain dB"; loudness plot `.loudness-plot`
  (one dot per stem, before and after, with the contract's target).
- Pronunciation (`.pronunciation`): "Kind" select, "Word or name" (`.pron-text`, offers
  the datasets' and cached texts), "Listen" (`.pron-listen`) → the text's current stem
  `.pron-stem` (stem id, sha256, "spoken as") with its `.audio-player`; "Respelling",
  "Phonemes (<engine>)", "Note"; "Preview" → `.pron-preview-text`; "Fix & regenerate"
  (`.pron-fix`) and "Remove entry" (`.pron-remove`) run a job, status `.pron-status`;
  stale messages Tabulator `.pron-stale` (output_id, stem_id, text, reason) with "Check
  messages"; the dictionary Tabulator `.pron-dictionary` (click a row to edit it).
- Rotation: `.rotation-state` with one `.rotation-progress-<stream>` bar per stream
  (name, developer, script, added rotation kinds, pair); "Steps per Next"; buttons
  "Next <stream>" (`.rotation-next-<stream>`, takes that many steps, listed in
  `.rotation-taken`) and "Reset <stream>" (`.rotation-reset-<stream>`); last step
  `.rotation-last`; upcoming pairs Tabulator `.upcoming-pairs`. Every page follows the
  core's parameters through the live feed: there are no Refresh buttons.
- Storage: `.storage-status` (mode, bucket, prefix, upload queue; local mode: "No bucket
  is configured"), "Retry uploads" (`.storage-retry`, GCS mode); buttons "Re-audit"
  (`.storage-audit`), "Push" (`.storage-push`), "Pull" (`.storage-pull`; both disabled in
  local mode, `.storage-sync-note` says why); sync bar `.storage-progress` and status
  `.storage-job`; `.storage-summary` (counts per status); filter `.storage-filter` ("all",
  "missing here", "missing there", "differs", "orphan"); differences Tabulator
  `.storage-table`; prefix `.storage-prefix`, "List objects", "Next page"; objects
  Tabulator `.storage-objects` (click a row) → metadata Tabulator `.storage-metadata`.
- Behind INTERNAL_API_KEY: a "Sign out" button (`.sign-out`) posts to /dashboard/logout.
- Errors appear as Panel notifications (`.notyf__toast--error`), never as tracebacks.
- Data (names, texts, ids, error messages) is shown as text, never as HTML or Markdown
  (`app.views.common.md`, escaped notifications).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # Panel runs this file as a script: make `app` importable
    sys.path.insert(0, _ROOT)

import panel as pn  # noqa: E402
from panel.io.resources import LOCAL_DIST  # noqa: E402

from app.views.assemble import AssembleView  # noqa: E402
from app.views.cache import CacheView  # noqa: E402
from app.views.campaign import CampaignView  # noqa: E402
from app.views.common import md  # noqa: E402
from app.views.generate import GenerateView  # noqa: E402
from app.views.pronunciation import PronunciationView  # noqa: E402
from app.views.rotation import RotationView  # noqa: E402
from app.views.storage import StorageView  # noqa: E402
from app.views.workflow import WorkflowView  # noqa: E402
from hybrid_audio import workspace as workspace_module  # noqa: E402
from hybrid_audio.workspace import Workspace  # noqa: E402

# Resources are served by the Panel/Bokeh server itself (never a CDN: machines are offline).
pn.extension("tabulator", notifications=True, inline=False)
pn.config.notifications = True


#: Ends the session (`POST /dashboard/logout`, from this page: the gate checks the origin).
_SIGN_OUT = (
    '<form method="post" action="/dashboard/logout">'
    '<button type="submit" class="logout">Sign out</button></form>'
)


def _api_workspace() -> Workspace | None:
    """The workspace the API server installed, if this process runs the API."""
    return workspace_module.installed()


def create_dashboard(
    workspace: Workspace | None = None, audio_urls: bool | None = None
) -> pn.viewable.Viewable:
    """All pages over `workspace` (the process's shared one by default).

    `audio_urls`: give players the API's audio URLs (default: when the API serves this
    process; behind INTERNAL_API_KEY the dashboard's session cookie opens them, since a
    browser's `<audio>` cannot send the key header); otherwise the player gets the file.
    """
    if workspace is None:
        api = _api_workspace()
        workspace = api or workspace_module.current()
        if audio_urls is None:
            audio_urls = api is not None  # behind a key, the session cookie opens them
    audio_urls = bool(audio_urls)
    generate = GenerateView(workspace=workspace, audio_urls=audio_urls)
    assemble = AssembleView(workspace=workspace, audio_urls=audio_urls)
    workflow = WorkflowView(workspace=workspace, generate=generate, assemble=assemble)
    campaign = CampaignView(workspace=workspace, audio_urls=audio_urls, assemble=assemble)
    pages = [
        ("Workflow", workflow),
        ("Generate", generate),
        ("Assemble", assemble),
        ("Campaign", campaign),
        ("Cache", CacheView(workspace=workspace, audio_urls=audio_urls)),
        ("Pronunciation", PronunciationView(workspace=workspace, audio_urls=audio_urls)),
        ("Rotation", RotationView(workspace=workspace)),
        ("Storage", StorageView(workspace=workspace)),
    ]
    # Every page stays in the document (not `dynamic`): pages share inputs and results (the
    # Workflow page shows the Generate and Assemble pages' own), so a page changes while
    # hidden, and Panel 1.10 re-renders a detached pane with stylesheets from its CDN.
    tabs = pn.Tabs(*pages, dynamic=False, css_classes=["dashboard-tabs"])
    names = [name for name, _ in pages]
    workflow.open_page = campaign.open_page = lambda name: setattr(
        tabs, "active", names.index(name)
    )
    header = pn.pane.Markdown(
        f"## Hybrid Audio · engine {md(workspace.generator.engine.name)} · "
        f"{md(workspace.settings.base_dir)}",
        css_classes=["dashboard-header"],
    )
    top = [header]
    if audio_urls and workspace.settings.internal_api_key:  # behind the API's login gate
        top.append(pn.pane.HTML(_SIGN_OUT, css_classes=["sign-out"], width=120))
    return pn.Column(
        pn.Row(*top, sizing_mode="stretch_width"),
        tabs,
        sizing_mode="stretch_width",
        css_classes=["dashboard"],
    )


def serve_resources_locally() -> None:
    """Point this session's stylesheets at the server's own /static, as Panel's page does.

    Panel sets that URL on a document only when it renders the page. With several server
    workers the page's websocket may reach another worker, which creates the session from
    its id (normal Bokeh behaviour) without a page: its stylesheets would then name Panel's
    CDN (offline: an unstyled page). Set here, every session resolves them the same way.
    """
    rel = pn.state.rel_path  # "" at /dashboard; Panel sets it before running this file
    dist_url = f"{rel}/{LOCAL_DIST}" if rel else LOCAL_DIST
    pn.state.curdoc.template_variables.setdefault("dist_url", dist_url)


if __name__.startswith("bokeh"):
    serve_resources_locally()
    create_dashboard().servable(title="Hybrid Audio")
