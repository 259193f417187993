"""Dispatch manifests on disk: `<dir>/<shipment>.json` and `.csv`, each written atomically."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from services.fulfillment.repository import StoredManifest
from services.fulfillment.service import Manifest, manifest_csv, manifest_json


class ManifestWriter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, manifest: Manifest) -> StoredManifest:
        """The files are a function of the manifest, so a retried dispatch rewrites them equal."""
        self.directory.mkdir(parents=True, exist_ok=True)
        as_json = manifest_json(manifest)
        as_csv = manifest_csv(manifest)
        json_path = self._write(f"{manifest.shipment_id}.json", as_json)
        csv_path = self._write(f"{manifest.shipment_id}.csv", as_csv)
        return StoredManifest(
            json_path=str(json_path),
            csv_path=str(csv_path),
            manifest_sha256=hashlib.sha256(as_json).hexdigest(),
            csv_sha256=hashlib.sha256(as_csv).hexdigest(),
        )

    def _write(self, name: str, content: bytes) -> Path:
        target = self.directory / name
        partial = self.directory / f".{name}.partial"
        with partial.open("wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        return target
