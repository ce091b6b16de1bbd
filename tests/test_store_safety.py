"""data.json safety: only regular files are data, links are followed and kept,
one run per file (by identity), and only the lab's own files are ever removed."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.core.errors import DataFileBusy, StoreCorrupted
from lab.stores import rundirs
from lab.stores.jsonfile import Store


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays behind, which is what we want


def _directory(path: Path) -> None:
    path.mkdir()


def _device(kind: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("device nodes need root (CI runs as root, so this runs there)")
        os.mknod(path, kind | 0o600, os.makedev(1, 3))  # /dev/null's numbers

    return make


NOT_REGULAR = {
    "fifo": (_fifo, "FIFO"),
    "socket": (_socket, "socket"),
    "directory": (_directory, "directory"),
    "char-device": (_device(stat.S_IFCHR), "character device"),
    "block-device": (_device(stat.S_IFBLK), "block device"),
}


@pytest.fixture(params=sorted(NOT_REGULAR))
def not_regular(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    make, words = NOT_REGULAR[request.param]
    path = tmp_path / "data.json"
    make(path)
    return path, words


@pytest.mark.timeout(20)  # a FIFO opened for reading without O_NONBLOCK would hang here
def test_not_a_regular_file_is_refused_by_every_entry_point(
    not_regular: tuple[Path, str], tmp_path: Path
) -> None:
    path, words = not_regular
    before = sorted(os.listdir(tmp_path))
    mode = os.lstat(path).st_mode
    store = Store(path)
    for action in (store.read, lambda: store.reset(3), store.claim):
        with pytest.raises(StoreCorrupted) as info:
            action()
        assert words in str(info.value)
        assert "\n" not in str(info.value)
    # Nothing was created beside it (no lock, no backup, no temp) and it is still what it was.
    assert sorted(os.listdir(tmp_path)) == before
    assert os.lstat(path).st_mode == mode


def test_symlinked_data_is_written_through_and_the_link_is_kept(tmp_path: Path) -> None:
    real = tmp_path / "real" / "data.json"
    real.parent.mkdir()
    real.write_text('{"ticket_num": 7}')
    link = tmp_path / "link.json"
    link.symlink_to(real)
    store = Store(link)
    assert store.read() == 7
    store.write_atomic(6)
    store.reset(4)
    assert link.is_symlink()
    assert os.readlink(link) == str(real)
    assert json.loads(real.read_text()) == {"ticket_num": 4}
    # The lab's files sit beside the target, not beside the link.
    assert store.lock_path == real.with_name("data.json.lock")
    assert sorted(os.listdir(tmp_path)) == ["link.json", "real"]


def test_dangling_symlink_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    link = tmp_path / "data.json"
    link.symlink_to(tmp_path / "missing" / "data.json")
    with pytest.raises(StoreCorrupted, match="symbolic link to nothing"):
        Store(link).reset(1)
    with pytest.raises(StoreCorrupted, match="symbolic link to nothing"):
        Store(link).claim()
    assert os.listdir(tmp_path) == ["data.json"]


def test_hard_linked_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"ticket_num": 1}')
    os.link(path, tmp_path / "other.json")
    with pytest.raises(StoreCorrupted, match="2 hard links"):
        Store(path).reset(1)
    with pytest.raises(StoreCorrupted, match="hard links"):
        Store(path).claim()
    assert path.read_text() == '{"ticket_num": 1}'


def test_two_names_for_one_file_share_one_claim(tmp_path: Path) -> None:
    real = tmp_path / "data.json"
    real.write_text('{"ticket_num": 1}')
    (tmp_path / "alias.json").symlink_to(real)
    (tmp_path / "sub").mkdir()
    dotted = tmp_path / "sub" / ".." / "data.json"
    claim = Store(real).claim()
    try:
        for other in (tmp_path / "alias.json", dotted):
            with pytest.raises(DataFileBusy):
                Store(other).claim()
    finally:
        claim.close()
    Store(tmp_path / "alias.json").claim().close()  # free again once released


def test_a_claim_outlives_its_maker_while_a_forked_child_holds_it(tmp_path: Path) -> None:
    """An orphaned buyer still holds the claim, so no second run can start beside it."""
    path = tmp_path / "data.json"
    path.write_text('{"ticket_num": 1}')
    claim = Store(path).claim()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "buyer": keeps the inherited fd until told to go
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        claim.close()  # the runner is gone...
        with pytest.raises(DataFileBusy):
            Store(path).claim()  # ...but its buyer is not
    finally:
        os.close(write_end)  # the child reads EOF and exits
        os.waitpid(pid, 0)
    Store(path).claim().close()


def test_duplicate_key_is_refused_as_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'{"ticket_num": 1, "ticket_num": 5}')
    with pytest.raises(StoreCorrupted, match="more than once"):
        Store(path).read()


def test_reset_never_sweeps_files_it_did_not_make(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"ticket_num": 1}')
    lookalikes = [
        tmp_path / f".data.json.{os.getpid()}-0.tmp",
        tmp_path / ".data.json.mine.tmp",
        tmp_path / ".data.json.123-4.tmp",
    ]
    for f in lookalikes:
        f.write_text("the user's")
    Store(path).reset(3)
    Store(path).write_atomic(2)
    for f in lookalikes:
        assert f.read_text() == "the user's"


def test_remove_temps_removes_only_exact_names_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"ticket_num": 1}')
    ours = tmp_path / ".data.json.99-0.tmp"
    ours.write_text("{}")
    elsewhere = tmp_path / "sub" / ".data.json.99-0.tmp"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}")
    kept = tmp_path / ".data.json.99-1.tmp"
    kept.write_text("{}")
    assert Store(path).remove_temps([str(ours), str(elsewhere)]) == 1
    assert not ours.exists()
    assert elsewhere.exists()
    assert kept.exists()


def test_atomic_write_records_its_temp_while_in_flight(tmp_path: Path) -> None:
    seen: list[str | None] = []
    path = tmp_path / "data.json"
    store = Store(path, step=lambda name: seen.append(store.temp_in_flight))
    store.reset(2)
    assert seen
    assert seen[-1] is not None
    assert Path(seen[-1]).parent == tmp_path
    assert store.temp_in_flight is None


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_give_one_line(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # decoding is the reader's job, tested with the bad files above
    outcome: object
    try:
        outcome = Store("data.json").parse(text)
    except StoreCorrupted as exc:
        outcome = exc  # the only exception parse may raise; any other fails the test
    if isinstance(outcome, StoreCorrupted):
        assert "\n" not in outcome.problem.replace(text, "")
    else:
        assert isinstance(outcome, int)
        assert outcome >= 0


# -- run directories ----------------------------------------------------------


@pytest.fixture
def tmpdir_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


def test_run_dirs_are_bounded_and_only_marked_idle_ones_go(tmpdir_base: Path) -> None:
    foreign = tmpdir_base / "lab-not-ours"
    foreign.mkdir()
    (foreign / "data.json").write_text("{}")  # no marker: never ours
    made = []
    for i in range(5):
        with rundirs.new_run_dir(keep=3) as rd:
            (rd.path / "data.json").write_text('{"ticket_num": 0}')
            made.append(rd.path)
        os.utime(rd.path, (time.time() + i, time.time() + i))
    kept = rundirs.run_dirs()
    assert len(kept) == 3
    assert kept == made[-3:]
    assert foreign.exists()


def test_run_dir_holding_a_users_file_or_in_use_is_kept(tmpdir_base: Path) -> None:
    held = rundirs.new_run_dir()
    with rundirs.new_run_dir() as other:
        (other.path / "notes.txt").write_text("mine")
    try:
        removed, kept = rundirs.clean()
        assert (removed, kept) == (0, 2)
        assert (other.path / "notes.txt").read_text() == "mine"
    finally:
        held.close()
    assert rundirs.clean() == (1, 1)
    assert not held.path.exists()
