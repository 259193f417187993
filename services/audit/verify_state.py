"""What the auditors' verifier remembers between runs: every checkpoint it verified, in a local
JSON file, never fetched from the API it checks. A log that shows this verifier a checkpoint
inconsistent with one it saw before (same size, other root; or no consistency proof) has
forked its history, whatever it signs now."""

from __future__ import annotations

import json
import os
from pathlib import Path


class SeenCheckpoints:
    def __init__(self, path: Path, origin: str) -> None:
        self.path, self.origin = path, origin
        self.roots: dict[int, str] = {}  # tree size -> root hash (hex)
        if path.exists():
            state = json.loads(path.read_text())
            seen = state.get("origins", {}).get(origin, {})
            self.roots = {int(size): str(root) for size, root in seen.items()}

    def largest(self) -> tuple[int, str] | None:
        if not self.roots:
            return None
        size = max(self.roots)
        return size, self.roots[size]

    def remember(self, size: int, root_hex: str) -> None:
        self.roots[size] = root_hex

    def save(self) -> None:
        state: dict[str, dict[str, dict[str, str]]] = {"origins": {}}
        if self.path.exists():
            state = json.loads(self.path.read_text())
        state.setdefault("origins", {})[self.origin] = {
            str(size): root for size, root in sorted(self.roots.items())
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(state, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cardbureau-verify" / "seen-checkpoints.json"
