"""Writing metadata.json. Its format version and the checks applied when reading it belong to the
archive reader (utvm.project_api.mlf), which templates use too."""

from __future__ import annotations

import json

from utvm.project_api.mlf import FORMAT_VERSION, METADATA_FILE  # noqa: F401  (what the writer writes)


def dumps(metadata: dict) -> bytes:
    """Canonical JSON text (sorted keys, fixed indentation), so archives are byte-identical."""
    return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode("utf-8")
