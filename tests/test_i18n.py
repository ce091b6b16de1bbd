"""Every word in both languages: the catalog is complete, fresh and consistent.

The messages come from ``lab.core.i18n`` (gettext, the catalog in
``lab/locale/zh/LC_MESSAGES``). These tests fail when a marked message has no
Chinese, when the catalog keeps a message nobody uses, when the compiled
``.mo`` is older than the ``.po``, or when a translation drops or invents a
placeholder. ``scripts/i18n.py`` fixes the first three.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lab.core import i18n
from lab.core.contracts import Verdict
from lab.ui.render import render_result, verdict

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("i18n_tool", ROOT / "scripts/i18n.py")
assert _spec is not None and _spec.loader is not None
tool = importlib.util.module_from_spec(_spec)
sys.modules["i18n_tool"] = tool
_spec.loader.exec_module(tool)

PLACEHOLDER = re.compile(r"\{(\w*)(?:[:!][^}]*)?\}")
CJK = re.compile(r"[\u4e00-\u9fff]")


def _catalog():  # type: ignore[no-untyped-def]
    with tool.PO.open("rb") as f:
        return tool.read_po(f, locale="zh_Hans_CN")


def _ids(catalog) -> set[object]:  # type: ignore[no-untyped-def]
    return {m.id for m in catalog if m.id}


def test_every_marked_message_has_a_translation() -> None:
    catalog = _catalog()
    missing = [m.id for m in tool.extracted() if m.id and m.id not in _ids(catalog)]
    assert not missing, f"not in lab.po (run scripts/i18n.py, then translate): {missing}"
    untranslated = [m.id for m in catalog if m.id and not tool.translated(m.string)]
    assert not untranslated, f"no Chinese yet in lab.po: {untranslated}"


def test_the_catalog_keeps_no_message_nobody_uses() -> None:
    stale = _ids(_catalog()) - _ids(tool.extracted())
    assert not stale, f"stale entries in lab.po (run scripts/i18n.py): {stale}"


def test_the_compiled_catalog_is_the_po_compiled() -> None:
    assert tool.MO.read_bytes() == tool.mo_bytes(_catalog()), "run scripts/i18n.py"


def test_translations_keep_every_placeholder() -> None:
    for message in _catalog():
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, (message.id, string)


def test_the_renderers_branch_on_no_language() -> None:
    """No ``if zh:``: every word goes through the catalog."""
    for path in (ROOT / "lab/ui").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert 'lang == "zh"' not in text and "if zh" not in text, path


def _text(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(renderable)
    return str(console.file.getvalue())  # type: ignore[attr-defined]


def test_every_verdict_reads_in_both_languages() -> None:
    from tests.test_model_verdict import CASES  # noqa: PLC0415 - one Result per verdict

    assert set(CASES) == set(Verdict)
    for kind, (result, english) in CASES.items():
        en = verdict(result, "en").plain
        zh = verdict(result, "zh").plain
        assert en.startswith(english), kind
        assert CJK.search(zh), (kind, zh)
        # The Chinese headline is not the English one with a few words swapped.
        assert english.split(":")[0] not in zh, (kind, zh)
        screen = _text(render_result(result, "zh"))
        assert "expected to" not in screen and "remaining" not in screen, (kind, screen)


@pytest.mark.parametrize(("lang", "said"), [("en", "2 buyers"), ("zh", "2个用户")])
def test_each_language_loads_with_its_plurals(lang: str, said: str) -> None:
    """The installed catalog is found (fallback=False: a broken install fails loudly)."""
    _, n_ = i18n.translator(lang)  # type: ignore[arg-type]
    assert n_("{n} buyer", "{n} buyers", 2).format(n=2) == said
    assert n_("{n} buyer", "{n} buyers", 1).format(n=1) == said.replace("2", "1").replace(
        "buyers", "buyer"
    )


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_chinese_readme_opens_with_the_same_two_commands() -> None:
    english = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    chinese = _bash_blocks((ROOT / "README.zh.md").read_text(encoding="utf-8"))
    assert chinese[:2] == english[:2]
    assert "README.zh.md" in (ROOT / "README.md").read_text(encoding="utf-8")
