"""Named workloads: fixed, versioned settings a capture or an estimate can be asked for by ID.

``dsocr-standard-v1`` is the reproducible standard OCR workload (docs/capture.md, "Named
workloads"): the shipped 12-page set, mode ``gundam`` (``base_size = 1024``, ``image_size =
640``, ``crop_mode = True``: the vendor's crop grid per page), greedy decoding, 512 new tokens,
3 repeats. ``dsocr-quick-v1`` is what ``dsocr capture`` runs without flags: the same pages and
mode with 32 new tokens. A name never changes meaning; a changed definition gets a new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from dsocr.contract.errors import BadInput
from dsocr.model.modes import get_mode, select_crop_grid


@attrs.frozen
class NamedWorkload:
    """One named workload: what every page runs, and how often."""

    name: str
    mode: str  #: resolution mode; base_size, image_size and crop_mode follow from it
    max_new_tokens: int  #: tokens generated per page (1 from prefill, the rest decode steps)
    repeats: int  #: captured passes over all pages
    prompt_tokens: int = 12  #: fixed prompt ids of the replica (a checkpoint's tokenizer gives its own)
    crops: str = "auto"  #: the vendor's crop grid for each page
    decoding: str = "greedy"  #: argmax every step; EOS ignored by the replica
    pages: str = "standard"  #: the shipped 12-page set (``dsocr pages``)
    #: The pages' sizes in order (capture.pages.SPECS): 10 A4 portrait at 150 dpi, 1 landscape, 1 16:9 slide.
    page_sizes: tuple[tuple[int, int], ...] = ((1240, 1754),) * 10 + ((1754, 1240), (1600, 900))

    @property
    def page_count(self) -> int:
        """Pages per pass."""
        return len(self.page_sizes)

    @property
    def page_size(self) -> tuple[int, int]:
        """The most common page size (``dsocr model --workload`` estimates a page of it by default)."""
        return max(dict.fromkeys(self.page_sizes), key=self.page_sizes.count)

    @property
    def base_size(self) -> int:
        """The global view's side (the vendor's ``base_size``)."""
        return get_mode(self.mode).global_size

    @property
    def image_size(self) -> int | None:
        """The crops' side (the vendor's ``image_size``); ``None`` for a mode without crops."""
        return get_mode(self.mode).crop_size

    @property
    def crop_mode(self) -> bool:
        """Whether pages are cut into crops (the vendor's ``crop_mode``)."""
        return get_mode(self.mode).crops_allowed

    def to_json(self) -> dict[str, Any]:
        """The definition as recorded in manifest.json and the reports."""
        return {
            "name": self.name,
            "pages": self.pages,
            "page_count": self.page_count,
            "page_sizes": [list(size) for size in self.page_sizes],
            "mode": self.mode,
            "base_size": self.base_size,
            "image_size": self.image_size,
            "crop_mode": self.crop_mode,
            "crops": self.crops,
            "decoding": self.decoding,
            "max_new_tokens": self.max_new_tokens,
            "prompt_tokens": self.prompt_tokens,
            "repeats": self.repeats,
        }

    def describe(self) -> str:
        """One line: ``dsocr-standard-v1 (12 standard pages, gundam 1024/640 crops, greedy, 512 new tokens, 3 x)``."""
        crops = f"{self.base_size}/{self.image_size} crops" if self.crop_mode else f"{self.base_size}, no crops"
        return (
            f"{self.name} ({self.page_count} {self.pages} pages, {self.mode} {crops}, {self.decoding}, "
            f"{self.max_new_tokens} new tokens, {self.repeats} repeats)"
        )


QUICK: Final = NamedWorkload("dsocr-quick-v1", mode="gundam", max_new_tokens=32, repeats=3)
STANDARD: Final = NamedWorkload("dsocr-standard-v1", mode="gundam", max_new_tokens=512, repeats=3)
#: Every named workload by ID.
WORKLOADS: Final[Mapping[str, NamedWorkload]] = {w.name: w for w in (QUICK, STANDARD)}
#: What ``dsocr capture`` runs without --workload and without workload flags.
DEFAULT: Final = QUICK

#: The settings a named workload fixes (``settings`` keys of manifest.json and capture's options).
FIXED: Final[tuple[str, ...]] = ("pages", "mode", "crops", "max_new_tokens", "prompt_tokens", "repeats")


def get_workload(name: str) -> NamedWorkload:
    """The workload called ``name`` (BadInput naming the known ones)."""
    found = WORKLOADS.get(name.strip().lower())
    if found is None:
        raise BadInput(f"workload {name!r} is unknown: use one of {', '.join(WORKLOADS)}")
    return found


def _fixed_values(w: NamedWorkload) -> dict[str, Any]:
    return {
        "pages": (),
        "mode": w.mode,
        "crops": w.crops,
        "max_new_tokens": w.max_new_tokens,
        "prompt_tokens": w.prompt_tokens,
        "repeats": w.repeats,
    }


def differences(w: NamedWorkload, settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The :data:`FIXED` settings whose value differs from ``w``'s (``pages``: any given page list)."""
    want = _fixed_values(w)
    out = []
    for key in FIXED:
        got = settings.get(key)
        if key == "pages":
            if got:  # a page list instead of the standard set
                out.append(key)
        elif key in ("mode", "crops"):
            if str(got).strip().lower() != str(want[key]):
                out.append(key)
        elif got != want[key]:
            out.append(key)
    return tuple(out)


def matching(settings: Mapping[str, Any]) -> NamedWorkload | None:
    """The named workload whose every fixed setting ``settings`` has, if any."""
    return next((w for w in WORKLOADS.values() if not differences(w, settings)), None)


def resolve(name: str | None, given: Mapping[str, Any]) -> tuple[dict[str, Any], NamedWorkload | None]:
    """The fixed settings of a command line: ``given`` holds what the user set (``None``: not set).

    Without ``name`` the unset ones come from :data:`DEFAULT`. With ``name`` every unset one comes
    from that workload and a set one must agree with it: a contradiction is a BadInput naming the
    option (the command turns it into a usage error). Returns the settings and the named workload
    they match (``None``: a custom workload).
    """
    base = get_workload(name) if name is not None else DEFAULT
    want = _fixed_values(base)
    out: dict[str, Any] = {}
    for key in FIXED:
        value = given.get(key)
        if value is None or (key == "pages" and not value):
            out[key] = want[key]
            continue
        out[key] = value
        if name is not None and key in differences(base, {**want, key: value}):
            flag = "--" + key.replace("_", "-")
            shown = "a page list" if key == "pages" else f"{flag} {value}"
            fixed = "the standard page set" if key == "pages" else f"{flag} {want[key]}"
            env = "DSOCR_" + ("CAPTURE_PAGES" if key == "pages" else key.upper())
            raise BadInput(
                f"--workload {base.name} fixes {fixed}, {shown} contradicts it: drop {flag} (or {env}) "
                "or drop --workload"
            )
    return out, matching(out)


def matching_page(mode: str, grid: tuple[int, int], fixed: Mapping[str, Any], batch: int = 1) -> NamedWorkload | None:
    """The named workload of which a one-page estimate (mode, crop grid, token counts, batch) is a page."""
    for w in WORKLOADS.values():
        same_tokens = (fixed.get("max_new_tokens"), fixed.get("prompt_tokens")) == (w.max_new_tokens, w.prompt_tokens)
        grids = {select_crop_grid(*size, w.mode) for size in w.page_sizes}
        if batch == 1 and mode == w.mode and same_tokens and grid in grids:
            return w
    return None


def label(record: Mapping[str, Any] | None, settings: Mapping[str, Any] | None) -> str | None:
    """What a run's workload is, in words, from manifest.json's ``workload`` record (or, for a manifest
    written before it existed, its ``settings``); ``None`` without either (a foreign trace)."""
    if isinstance(record, Mapping) and record.get("name"):
        known = WORKLOADS.get(str(record["name"]))
        return known.describe() if known is not None else str(record["name"])
    if isinstance(record, Mapping):
        closest, differs = record.get("closest"), record.get("differs") or []
    elif isinstance(settings, Mapping) and settings:
        found = matching(settings)
        if found is not None:
            return found.describe()
        closest, differs = DEFAULT.name, list(differences(DEFAULT, settings))
    else:
        return None
    return f"custom (differs from {closest} in {', '.join(map(str, differs)) or 'nothing recorded'})"
