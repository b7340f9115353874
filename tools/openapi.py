"""Write src/openapi.json from the routes and src/schemas.py: ``python -m tools.openapi`` (``make openapi``).

``--check`` writes nothing and exits 1 when the committed file differs from what the code builds.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from src.apidoc import DOCUMENT_PATH, build_document, documentation_app, render


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="flask-api-doc-") as folder:
        text = render(build_document(documentation_app(Path(folder))))
    if "--check" in argv:
        if DOCUMENT_PATH.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT_PATH} differs from what the code builds: run make openapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
