"""`/external/datasets`: the datasets of every kind (`GET /kinds`), shown and replaced by
upload. The URLs keep the seed's `/external` prefix.

Uploads are limited to `MAX_IMPORT_BYTES` (413) and `MAX_IMPORT_ENTRIES` lines or items;
a file holding a refused entry (an invisible character, an over-long line) is a 422 whose
`details` list every offending line. Paths are shown relative to the base directory: a
client never learns where the server keeps its files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, UploadFile

from hybrid_audio import kinds
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.models import DatasetContent, DatasetInfo, DatasetItemOut, KindPath
from hybrid_audio.config import Settings
from hybrid_audio.datasets import (
    MAX_IMPORT_BYTES,
    Dataset,
    DatasetError,
    dataset_path,
    display_path,
    import_dataset,
    load_dataset,
)

router = APIRouter(prefix="/external", tags=["datasets"])
_SUFFIXES = (".txt", ".csv", ".json")


def _info(dataset: Dataset, settings: Settings) -> DatasetInfo:
    return DatasetInfo(
        kind=dataset.kind,
        count=len(dataset),
        path=display_path(dataset_path(dataset.kind, settings), settings),
        collisions=[f"{kept} / {dropped} → {sid}" for kept, dropped, sid in dataset.collisions],
        rejected=[f"line {line}: {text!r}: {why}" for line, text, why in dataset.rejected],
    )


@router.get("/datasets", response_model=list[DatasetInfo], summary="Every kind's dataset")
def datasets(workspace: WorkspaceDep) -> list[DatasetInfo]:
    """One entry per kind; a dataset that cannot be read (missing, malformed) is listed
    with count 0 and the reason in `rejected`."""
    settings = workspace.settings
    infos = []
    for kind in kinds.load(settings):
        try:
            infos.append(_info(load_dataset(kind.name, settings), settings))
        except DatasetError as error:
            path = display_path(kind.dataset_path(settings), settings)
            infos.append(
                DatasetInfo(
                    kind=kind.name, count=0, path=path, collisions=[], rejected=[str(error)]
                )
            )
    return infos


@router.get("/datasets/{kind}", response_model=DatasetContent, summary="One dataset's entries")
def dataset(kind: KindPath, workspace: WorkspaceDep) -> DatasetContent:
    data = load_dataset(kind, workspace.settings)
    items = [DatasetItemOut(text=i.text, stem_id=str(i.stem_id), key=i.key) for i in data.items]
    return DatasetContent(**_info(data, workspace.settings).model_dump(), items=items)


@router.post(
    "/datasets/{kind}",
    response_model=DatasetInfo,
    summary="Replace a dataset with an uploaded txt, csv or json file",
)
def upload_dataset(kind: KindPath, file: UploadFile, workspace: WorkspaceDep) -> DatasetInfo:
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in _SUFFIXES:
        raise ApiError(422, f"upload a .txt, .csv or .json file, not {file.filename!r}")
    data = file.file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise ApiError(413, f"datasets are limited to {MAX_IMPORT_BYTES} bytes (MAX_IMPORT_BYTES)")
    with tempfile.TemporaryDirectory() as folder:
        upload = Path(folder) / f"upload{suffix}"
        upload.write_bytes(data)
        try:
            imported = import_dataset(kind, upload, workspace.settings)
        except DatasetError as error:
            message = str(error).replace(str(upload), file.filename or "upload")
            raise ApiError(422, message, details=error.problems or None) from None
    return _info(imported, workspace.settings)
