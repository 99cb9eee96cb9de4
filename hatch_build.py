"""The package's Kedro dependency, read from cookiecutter.json's ``_kedro_versions``
at build time: the supported Kedro versions are written there once, where the
pre-generation hook (from a checkout or from this package) and noxfile.py read
them too."""

from __future__ import annotations

import json
from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface


class KedroVersionsHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        context = json.loads(Path(self.root, "cookiecutter.json").read_text())
        metadata["dependencies"] = [f"kedro{context['_kedro_versions']}"]
