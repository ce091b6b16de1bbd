from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from lab.core.errors import StoreCorrupted
from lab.stores.jsonfile import MAX_TICKETS, Store

BAD_FILES = {
    "empty": (b"", "is empty"),
    "not-json": (b"{ticket_num: 1", "is not valid JSON"),
    "list": (b"[1]", "must hold an object"),
    "missing-key": (b'{"tickets": 1}', 'has no "ticket_num"'),
    "extra-key": (b'{"ticket_num": 1, "owner": "x"}', "unexpected keys: owner"),
    "negative": (b'{"ticket_num": -1}', "must not be negative"),
    "fraction": (b'{"ticket_num": 1.5}', "whole number"),
    "boolean": (b'{"ticket_num": true}', "whole number"),
    "string": (b'{"ticket_num": "1"}', "whole number"),
    "enormous": (json.dumps({"ticket_num": MAX_TICKETS + 1}).encode(), "larger than"),
    "huge-digits": (b'{"ticket_num": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "not-utf8": (b'{"ticket_num": 1}\xff', "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_one_clear_error_naming_file_and_problem(case: str, tmp_path: Path) -> None:
    content, problem = BAD_FILES[case]
    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupted) as info:
        Store(path).read()
    assert problem in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content  # reading never touches the file


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreCorrupted, match="does not exist"):
        Store(tmp_path / "nope.json").read()
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(StoreCorrupted, match="is a directory"):
        Store(tmp_path / "dir.json").read()


def test_unreadable(tmp_path: Path) -> None:
    """A file we may not read is one line naming it. Root reads any file, so as root
    the read runs in a child that has dropped to nobody (65534) first."""
    here = tmp_path / "shared"
    here.mkdir()
    here.chmod(0o777)
    path = here / "data.json"
    path.write_text('{"ticket_num": 1}')
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(StoreCorrupted, match="permission denied"):
            Store(path).read()
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try, report, and leave without cleanup
        code = 3
        try:
            os.close(read)
            os.chdir(here)  # nobody may not traverse pytest's 0700 temp root; cwd is held
            os.setgid(65534)
            os.setuid(65534)
            try:
                Store(Path("data.json")).read()
                message = b"read it"
            except StoreCorrupted as exc:
                message = str(exc).encode()
            os.write(write, message)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "permission denied" in message, message


def test_round_trip_in_the_notes_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "data.json")
    store.reset(3)
    assert store.read() == 3
    store.write_in_place(2)
    assert json.loads(store.path.read_text()) == {"ticket_num": 2}
    store.write_atomic(1)
    assert store.path.read_text() == '{"ticket_num": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # no temp files left


def test_corrupted_error_survives_pickling() -> None:
    err = StoreCorrupted("/x/data.json", "is empty")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, StoreCorrupted) and str(back) == str(err)


def test_reset_of_unreadable_file_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b"garbage")
    backup = Store(path).reset(5)
    assert backup is not None and backup.read_bytes() == b"garbage"
    assert Store(path).read() == 5


def test_reset_of_good_file_keeps_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    Store(path).reset(1)
    assert Store(path).reset(5) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_a_file_that_cannot_be_read_even_by_root() -> None:
    """/proc/self/mem opens, but reading it at offset 0 fails (EIO): unreadable even for root."""
    with pytest.raises(StoreCorrupted, match="cannot be read"):
        Store("/proc/self/mem").read()
