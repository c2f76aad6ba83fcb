"""``dsocr pages``: write the standard 12-page input set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_dir, option


@app.command()
def pages(
    out: Annotated[
        Path,
        option(
            "pages",
            "--out",
            "-o",
            help="Directory to write the 12 PNG pages and manifest.json into (created if missing).",
        ),
    ] = Path("dsocr-pages"),
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate the standard input set (4 text, 4 mixed-layout, 4 image-rich pages), byte-identical every run."""
    from dsocr.capture import pages as gen

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    check_out_dir(out)
    gen.check_out(out)
    entries = gen.generate(out, on_page=lambda e: ui.debug(f"{e.name}: {e.kind} {e.width}x{e.height} {e.sha256}"))
    if json_out:
        print(json.dumps({"out": str(out), "pages": [e.to_json() for e in entries]}, indent=2))
    else:
        ui.info(f"wrote {len(entries)} pages and {gen.PAGES_MANIFEST} to {out}")
