"""Making one campaign message: the one code path of the in-process run and the Dask workers.

A row is assembled under its deterministic output id, proven, and kept as the campaign's
store mode says; an output a previous run finished for the row but never recorded (it
crashed, was cancelled, or its Dask worker died) is adopted after its proof is made again;
what a crash left half-made is removed and made anew. Nothing here writes the state
database: the caller (the campaign's driver) commits the returned `RowUpdate`s.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hybrid_audio.assembly import Assembler, abandoned, writer_finished
from hybrid_audio.config import Settings
from hybrid_audio.engines.base import EngineConfigError, EngineQuotaError, EngineUnavailableError
from hybrid_audio.files import TEMP_SUFFIX, SyncBatch, discard, leftovers
from hybrid_audio.render import keep_manifest_only

if TYPE_CHECKING:
    from hybrid_audio.assembly import AssemblyResult

#: A row as a task input: (row number, name, developer, script key or None, recipient id or
#: None).
RowInputs = tuple[int, str, str, "str | None", "str | None"]
#: A row's outcome: (state, output id, duration, sha256, verified, error, row number).
RowUpdate = tuple[str, "str | None", "float | None", "str | None", int, str, int]
#: Errors that fail one row…
ROW_ERRORS = (ValueError, KeyError, RuntimeError)
#: …except these, which would repeat for every row (engine down, quota, configuration, the
#: disk): they stop the run.
STOPPING_ERRORS = (EngineUnavailableError, EngineQuotaError, EngineConfigError, OSError)
#: An unreadable or partial manifest or WAV (what a crash leaves): made again, never adopted.
_UNREADABLE = (KeyError, ValueError, TypeError, AttributeError, OSError)


def output_id_of(campaign_id: str, row: int) -> str:
    """The deterministic output id of a campaign's row."""
    return f"{campaign_id}_{row:06d}"


def row_inputs(message: Any) -> RowInputs:
    """The task input of a stored row (a `MessageRow`: row, name, developer, script,
    recipient_id), the same for the in-process run and the Dask chunks."""
    return (message.row, message.name, message.developer, message.script, message.recipient_id)


@dataclass(frozen=True)
class CampaignRows:
    """What is needed to make a campaign's messages anywhere: the settings (the base dir
    every machine shares), the contract, and the campaign's pinned choices."""

    settings: Settings
    contract: dict[str, Any]
    campaign_id: str
    template: str
    join: str | None
    contract_signature: str
    manifest_only: bool

    @classmethod
    def of(cls, assembler: Assembler, info: Any) -> CampaignRows:
        """The inputs of campaign `info` (a `CampaignInfo`) made with `assembler`'s settings
        and (live, checked equal to the pinned) contract."""
        return cls(
            settings=assembler.settings,
            contract=assembler.contract.values(),
            campaign_id=info.id,
            template=info.template,
            join=info.join,
            contract_signature=info.contract_signature,
            manifest_only=info.params.get("store") == "manifest",
        )


def make_row(
    assembler: Assembler,
    campaign: CampaignRows,
    row: RowInputs,
    *,
    generate_missing: bool = True,
    files: SyncBatch | None = None,
) -> RowUpdate:
    """Adopt or assemble one row and prove it.

    With `files` the output is written without fsync and its files are added there (the
    caller syncs them before it commits the row: group commit); adopted outputs are added
    too, since the run that made them may have died before its sync. A message whose proof
    fails is not delivered: the row fails, saying so (its files stay for inspection).
    The manifest's `campaign` block (campaign id, row, recipient id) says whom the message
    is for, so a WAV and manifest copied out of `output/` still do.
    """
    number, name, developer, script, recipient_id = row
    output_id = output_id_of(campaign.campaign_id, number)
    adopted = adopt(assembler, campaign, row)
    if adopted is not None:
        keep(assembler, campaign, output_id)
        if files is not None:
            wav = assembler.output_dir / f"{output_id}.wav"
            files.add(wav, wav.with_suffix(".json"))
        return ("done", output_id, *adopted, "", number)
    try:
        result: AssemblyResult = assembler.assemble(
            campaign.template,
            name,
            developer,
            script,
            mode=campaign.join,
            output_id=output_id,
            generate_missing=generate_missing,
            batch=files,
            campaign={"id": campaign.campaign_id, "row": number, "recipient_id": recipient_id},
            keep_wav=not campaign.manifest_only,
        )
    except STOPPING_ERRORS:
        raise
    except ROW_ERRORS as error:
        return ("failed", None, None, None, 0, str(error), number)
    ok = result.report.ok
    return (
        "done" if ok else "failed",
        output_id,
        result.summary.duration,
        result.summary.sha256,
        int(ok),
        "" if ok else "the message did not verify byte for byte",
        number,
    )


def keep(assembler: Assembler, campaign: CampaignRows, output_id: str) -> None:
    """Keep an adopted message as the store mode says (manifest: drop the WAV a run made
    before messages of manifest campaigns were assembled without one)."""
    if campaign.manifest_only:
        keep_manifest_only(assembler, output_id)


def adopt(
    assembler: Assembler, campaign: CampaignRows, row: RowInputs
) -> tuple[float, str, int] | None:
    """(duration, sha256, verified) of an output a previous run made for `row` but did not
    record, or None after removing whatever is there.

    Adopted only if its manifest names this row's inputs, template and contract and its
    WAV (or, in manifest mode, the render) still holds the recorded bytes; the proof is made
    again. A WAV without manifest is what a crash leaves: removed, with the temp file of a
    dead writer (a killed worker's) still linking it. The manifest's `campaign` block is not
    compared: a message made before manifests had one is adopted as it is.
    """
    number, name, developer, script, _ = row
    output_id = output_id_of(campaign.campaign_id, number)
    base = os.path.join(assembler.settings.output_dir, output_id)
    # The usual row: nothing made yet. The manifest is asked after the WAV: a writer links
    # the WAV before it writes the manifest (and a manifest-only message has no WAV).
    if not os.path.lexists(f"{base}.wav") and not os.path.exists(f"{base}.json"):
        return None
    folder = assembler.output_dir
    wav = folder / f"{output_id}.wav"
    manifest = wav.with_suffix(".json")
    if not manifest.exists():
        with contextlib.suppress(FileNotFoundError):
            if not writer_finished(wav):  # still linked by a temp name: is its writer dead?
                # (listed only here: a folder of 10⁶ outputs is not scanned for every row)
                for leftover in leftovers(folder, f".{output_id}.*{TEMP_SUFFIX}"):
                    discard(leftover)
            if abandoned(wav):
                discard(wav)
        if not manifest.exists():  # (else a live writer just finished it: adopted below)
            return None
    try:
        document = assembler.load_output(output_id)
        inputs = document["inputs"]
        same = (
            document["template"] == campaign.template
            and document["contract_signature"] == campaign.contract_signature
            and (inputs.get("name"), inputs.get("developer"), inputs.get("script"))
            == (name, developer, script)
        )
        if same:
            assembler.read_output(output_id)  # the bytes the manifest recorded
            if assembler.verify_output(output_id).ok:  # else made again
                return document["output"]["duration"], document["output"]["sha256"], 1
    except _UNREADABLE:
        pass  # a manifest or WAV a crash left partial or unreadable: made again
    discard(wav)
    discard(manifest)
    return None
