"""Update the message catalog: extract every marked message, merge, compile.

    .venv/bin/python scripts/i18n.py            # extract + merge + compile
    .venv/bin/python scripts/i18n.py --missing  # list messages without a translation

Messages are marked ``_("...")`` and ``n_("one", "many", n)`` (see
``lab.core.i18n``). New messages enter ``lab.po`` untranslated; translate
them there, then run this again to compile ``lab.mo``. Needs Babel (in the
``test`` extra).
"""

from __future__ import annotations

import argparse
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "lab/locale/zh/LC_MESSAGES/lab.po"
MO = PO.with_suffix(".mo")
KEYWORDS = {"_": None, "n_": (1, 2), "N_": None}
#: Fixed, so that running this twice changes nothing (the catalog is compared byte for byte).
STAMP = datetime(2026, 12, 1, tzinfo=UTC)
HEADER = {
    "project": "ticket-race-lab",
    "version": "0.1",
    "copyright_holder": "the ticket-race-lab authors",
    "msgid_bugs_address": "",
    "last_translator": "the ticket-race-lab authors",
    "language_team": "zh",
    "creation_date": STAMP,
    "revision_date": STAMP,
    "fuzzy": False,
}


def extracted() -> Catalog:
    """Every marked message in lab/, as a template catalog."""
    template = Catalog(**HEADER)  # type: ignore[arg-type]
    for filename, lineno, message, comments, _context in extract_from_dir(
        str(ROOT / "lab"), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        template.add(message, locations=[(f"lab/{filename}", lineno)], auto_comments=comments)
    return template


def translated(string: str | tuple[str, ...]) -> bool:
    """Every form of a message has a translation (a plural has several)."""
    return all(string) if isinstance(string, tuple) else bool(string)


def load() -> Catalog:
    if not PO.exists():
        return Catalog(locale="zh_Hans_CN", **HEADER)  # type: ignore[arg-type]
    with PO.open("rb") as f:
        catalog = read_po(f, locale="zh_Hans_CN")
    for key, value in HEADER.items():
        setattr(catalog, key, value)
    return catalog


def po_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, width=100, omit_header=False, sort_output=True, no_location=True)
    return out.getvalue()


def mo_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing", action="store_true", help="list untranslated messages")
    args = parser.parse_args()
    catalog = load()
    catalog.update(extracted(), no_fuzzy_matching=True)
    catalog.obsolete.clear()  # a message nobody marks any more leaves the catalog
    missing = [m.id for m in catalog if m.id and not translated(m.string)]
    if args.missing:
        for message_id in missing:
            print(message_id)
        return 1 if missing else 0
    PO.parent.mkdir(parents=True, exist_ok=True)
    PO.write_bytes(po_bytes(catalog))
    MO.write_bytes(mo_bytes(catalog))
    print(f"{PO.relative_to(ROOT)}: {len(catalog)} messages, {len(missing)} untranslated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
