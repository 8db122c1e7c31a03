"""Pieces every page uses: data as text, friendly errors, the waveform, the audio player.

Data (names, developers, scripts, stem ids, file names, error messages quoting them) is
uploaded by API clients, so it never reaches the browser as HTML or Markdown: views put it
in Markdown only through `md()`, notifications through `notify_error`/`notify_info` (which
escape), tables through Tabulator's text formatters, plot labels on the canvas. Views call
the core and show its errors as notifications (never a traceback); the waveform is always
decimated by `hybrid_audio.waveform` before it reaches the browser, and audio is given to
the player by URL when the API serves it (files are the stand-alone fallback).
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any
from urllib.parse import quote

import panel as pn
import param
from bokeh.models import BoxAnnotation, Label
from bokeh.plotting import figure

from app.views.live import live
from hybrid_audio.config import Settings
from hybrid_audio.datasets import load_dataset
from hybrid_audio.jobs import Job, JobState
from hybrid_audio.wav import read_wav
from hybrid_audio.waveform import envelope

log = logging.getLogger("hybrid_audio.dashboard")

#: Shading per segment kind (audio segments alternate two tones so neighbours stand apart).
_SHADES = {"silence": "#dddddd", "gap": "#eeeeee"}
_AUDIO_SHADES = ("#cfe3f7", "#f7e3cf")
#: Tabulator's textarea formatter: a cell shown as text (it escapes HTML), wrapped.
WRAPPED = {"type": "textarea"}
#: Characters with a meaning in (GFM) Markdown that `html.escape` leaves alone.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:=])")


def md(value: object) -> str:
    """`value` as literal text inside Markdown: every Markdown and HTML character escaped.

    Markdown syntax is backslash-escaped first, then HTML's five characters become entities
    (`<` → `&lt;`, which Markdown shows as `<`), so neither a tag nor a link, image, code
    span or emphasis can come out of data.
    """
    return html.escape(_MARKDOWN_SYNTAX.sub(r"\\\1", str(value)))


def script_choices(settings: Settings, blank: bool = False) -> dict[str, str | None]:
    """Script keys for a dropdown, labelled "key — phrase" (the user picks what is said).

    Labels reach the browser as option text (never HTML). `blank` adds "—" (no script).
    A missing or broken scripts file gives no choices; the page that needs one says so.
    """
    choices: dict[str, str | None] = {"—": None} if blank else {}
    try:
        items = load_dataset("script", settings).items
    except ValueError:
        return choices
    choices.update({f"{item.key} — {item.text}": item.key for item in items})
    return choices


class PageState(param.Parameterized):
    """What every page shares: the last error shown to the user (tests read it)."""

    last_error = param.String(default="", doc="Message of the latest error notified.")


def notify_error(owner: PageState, error: BaseException) -> None:
    """Show `error` as a notification (and remember it); never re-raise.

    Messages quote data ("unknown name '<img …>'"), and notifications render HTML, so the
    text is escaped.
    """
    message = str(error) or type(error).__name__
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    owner.last_error = message
    log.info("dashboard error: %s", message)
    area = pn.state.notifications
    if area is not None:
        area.error(html.escape(message), duration=8000)


def notify_info(message: str) -> None:
    """Show `message` as an information notification, as text."""
    area = pn.state.notifications
    if area is not None:
        area.info(html.escape(message))


def friendly(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a view callback: core exceptions become notifications."""

    @functools.wraps(method)
    def wrapper(self: PageState, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # every core error is shown, none crashes the session
            notify_error(self, error)
            return None

    return wrapper


def waveform_figure(
    wav_bytes: bytes | None,
    spans: Sequence[tuple[float, float, str, str]] = (),
    boundaries: Sequence[int] = (),
    width: int = 1200,
    height: int = 220,
):
    """A Bokeh figure of the audio's envelope with each segment's span shaded and labelled.

    Takes the bytes the core has already proven (`StemCache.read`, `Assembler.read_output`),
    never a path: a view must not open a file that may have become a link since.
    """
    fig = figure(
        height=height,
        sizing_mode="stretch_width",
        x_axis_label="seconds",
        y_range=(-1.05, 1.05),
        tools="xpan,xwheel_zoom,reset",
        toolbar_location="right",
    )
    if wav_bytes is None:
        fig.line([], [])  # an empty plot still needs a renderer (Bokeh warns otherwise)
        return fig
    wav = read_wav(wav_bytes)
    env = envelope(wav, width, boundaries=boundaries)
    audio_count = 0
    for start, end, label, kind in spans:
        if kind == "audio":
            color = _AUDIO_SHADES[audio_count % 2]
            audio_count += 1
        else:
            color = _SHADES.get(kind, "#eeeeee")
        fig.add_layout(BoxAnnotation(left=start, right=end, fill_color=color, fill_alpha=0.6))
        if kind == "audio":
            text = label.split(".", 2)[-1]
            fig.add_layout(Label(x=start, y=0.85, text=text, text_font_size="9pt", x_offset=2))
    fig.quad(left=env.x, right=env.x_end, bottom=env.ymin, top=env.ymax, color="#1f4e79")
    return fig


def wav_download(
    read: Callable[[], BytesIO | None], name: str | None, what: str
) -> pn.widgets.FileDownload:
    """A "Download <what> (WAV)" button for the shown audio, disabled while there is none.

    `read` runs on click and gives the bytes the core has proven (a checked reader, never
    a path); `name` (a stem or output id) names the file, None when nothing is shown.
    """
    return pn.widgets.FileDownload(
        callback=read,
        filename=f"{name or what}.wav",
        label=f"Download {what} (WAV)",
        disabled=name is None,
        width=220,
        css_classes=[f"download-{what}"],
    )


def progress_bar(
    done: int, total: int, state: str = "", *, css_class: str
) -> pn.indicators.Progress:
    """A job's progress bar, made anew for every value: a Progress's value is bounded by its
    max, so updating the two separately fails whenever the value is set first (0/1 → 5/5).
    A `state` of done fills it, even for a job that had nothing to do (total 0)."""
    total = max(total, 1)
    return pn.indicators.Progress(
        value=total if state == JobState.DONE else min(done, total),
        max=total,
        css_classes=[css_class],
        sizing_mode="stretch_width",
    )


#: The parameters of a `Job` a job panel follows, in the order its status function takes them.
JOB_FIELDS = ("state", "done", "total", "message", "errors", "result")


def job_panel(
    workspace: Any,
    job: Job | None,
    status: Callable[..., str],
    *,
    bar_class: str,
    status_class: str,
) -> pn.viewable.Viewable:
    """A job's progress bar and status line, bound to the job's own parameters through the
    session's live feed; `status(job, state, done, total, message, errors, result)` words it
    (Markdown, data escaped). No job: an empty bar and line."""
    if job is None:
        return pn.Column(
            progress_bar(0, 0, css_class=bar_class),
            pn.pane.Markdown(css_classes=[status_class]),
            sizing_mode="stretch_width",
        )
    feed = live(workspace)
    refs = [feed.ref(job, name) for name in JOB_FIELDS]
    state, done, total = refs[:3]
    return pn.Column(
        pn.panel(pn.bind(progress_bar, done, total, state, css_class=bar_class)),
        pn.pane.Markdown(pn.bind(status, job, *refs), css_classes=[status_class]),
        sizing_mode="stretch_width",
    )


def audio_player(url: str | None, wav_bytes: bytes | None) -> pn.viewable.Viewable:
    """An audio player: by URL when the API serves the file, else from the proven bytes.

    The URL's path is quoted; its query (a version, so a remade file is not played from
    the browser's cache) is kept as given."""
    if url:
        src = html.escape(quote(url, safe="/?=&"), quote=True)
        return pn.pane.HTML(
            f'<audio controls preload="none" src="{src}" style="width:100%"></audio>',
            css_classes=["audio-player"],
            sizing_mode="stretch_width",
        )
    if wav_bytes:
        return pn.pane.Audio(BytesIO(wav_bytes), css_classes=["audio-player"], name="Audio")
    return pn.pane.Markdown("", css_classes=["audio-player"])
