"""Every word the lab shows, in English and in the notes' Chinese, through gettext.

A renderer asks for its language's functions and marks each message::

    _, n_ = i18n.translator(lang)
    _("{who} bought ticket #{n}").format(who=who, n=n)
    n_("{n} ticket", "{n} tickets", count).format(n=count)

English is the source text (the msgid); Chinese comes from the catalog
``lab/locale/zh/LC_MESSAGES/lab.po``, compiled to ``lab.mo`` beside it, and
read with the standard library's :mod:`gettext`. Placeholders are named and
filled with ``str.format`` after the lookup, never by an f-string (an
f-string would be formatted before gettext saw it, and never match).

``scripts/i18n.py`` extracts the marked messages (Babel), merges them into
the catalog, and compiles it; ``tests/test_i18n.py`` fails when a message has
no translation, the catalog holds a message nobody uses, or the ``.mo`` is
older than the ``.po``.

::

    lab/**/*.py --extract--> lab.po (msgid -> 中文) --compile--> lab.mo --gettext--> screen
"""

from __future__ import annotations

import functools
import gettext
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeAlias

__all__ = ["DOMAIN", "LANGS", "LOCALE_DIR", "N_", "Lang", "translator"]

Lang: TypeAlias = Literal["en", "zh"]
#: Every language the lab speaks; English is the source text.
LANGS: tuple[Lang, ...] = ("en", "zh")
DOMAIN = "lab"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

Gettext: TypeAlias = Callable[[str], str]
NGettext: TypeAlias = Callable[[str, str, int], str]


@functools.cache
def _translation(lang: Lang) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    # fallback=False: a missing catalog is a broken install, and says so at once.
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[lang])


def N_(message: str) -> str:  # gettext's own name for the marker
    """Mark ``message`` for the catalog, untranslated: it is translated where it is shown.

    For text that is defined in one place and shown in another (a variant's
    ``fix``, a word the CLI hands a renderer): the renderer calls ``_(text)``.
    """
    return message


def translator(lang: Lang = "en") -> tuple[Gettext, NGettext]:
    """``(_, n_)``: gettext and ngettext for ``lang``."""
    t = _translation(lang)
    return t.gettext, t.ngettext
