"""Uploads go to a temp file beside their destination as they arrive; checks read them in bounded memory."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from amphora_agent import lifecycle
from amphora_agent.errors import InvalidInput, UnsafePath
from amphora_agent.loadbalancers import haproxy_config, service
from amphora_agent.system import files, uploads
from tests.unit.strategies import lines_of


def upload(target: Path, data: bytes, parts: int = 3) -> uploads.Upload:
    """``data`` received in ``parts`` writes, as the API does."""
    writer = uploads.UploadWriter(target)
    step = max(1, len(data) // parts)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
    return writer.finish()


def test_an_upload_is_a_private_temp_beside_its_destination_with_its_md5(tmp_path: Path) -> None:
    """Size and md5 are computed on the way; the temp is 0600 in the destination's folder."""
    data = os.urandom(100_000)
    done = upload(tmp_path / "haproxy.cfg", data)
    assert done.path.parent == tmp_path and done.path.name.startswith(".haproxy.cfg.tmp-")
    assert (done.size, done.md5) == (len(data), hashlib.md5(data).hexdigest())
    assert done.path.read_bytes() == data
    assert stat.S_IMODE(done.path.stat().st_mode) == files.PRIVATE
    done.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_discarded_writer_leaves_nothing(tmp_path: Path) -> None:
    """A body refused half-way (413, a disconnect) leaves no file."""
    writer = uploads.UploadWriter(tmp_path / "x.pem")
    writer.write(b"half")
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_the_staging_folder_is_never_a_link_nor_missing(tmp_path: Path) -> None:
    """A missing folder or a symlinked one is passed over for the nearest real folder above it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "base"
    (base / "lb").mkdir(parents=True)
    (base / "linked").symlink_to(outside)
    assert uploads.staging_folder(base / "lb" / "haproxy.cfg") == base / "lb"
    assert uploads.staging_folder(base / "new-lb" / "haproxy.cfg") == base
    assert uploads.staging_folder(base / "linked" / "haproxy.cfg") == base
    done = upload(base / "linked" / "haproxy.cfg", b"global\n")
    assert done.path.parent == base and list(outside.iterdir()) == []
    done.discard()


def test_under_an_agent_folder_no_link_is_followed_to_stage_or_place(tmp_path: Path) -> None:
    """Below the agent's folder (``root``) a staged upload never goes through a link, and placing it
    where a folder was replaced by one is refused: the outside folder stays empty."""
    outside, base = tmp_path / "outside", tmp_path / "base"
    outside.mkdir()
    (base / "lb").mkdir(parents=True)
    (base / "linked").symlink_to(outside)
    staged = uploads.UploadWriter(base / "linked" / "haproxy.cfg", root=base).finish()
    assert staged.path.parent == base
    with pytest.raises(UnsafePath):
        uploads.place(staged, base / "linked" / "haproxy.cfg", files.PRIVATE, root=base)
    uploads.place(staged, base / "lb" / "haproxy.cfg", files.PRIVATE, root=base)
    assert (base / "lb" / "haproxy.cfg").exists() and list(outside.iterdir()) == []


def test_place_moves_the_upload_with_its_mode(tmp_path: Path) -> None:
    """The upload becomes the destination (a rename), with the mode asked for; the temp is gone."""
    done = upload(tmp_path / "lb" / "octavia-keepalived.conf", b"vrrp_instance x {}\n")
    uploads.place(done, tmp_path / "lb" / "octavia-keepalived.conf", files.PUBLIC)
    stored = tmp_path / "lb" / "octavia-keepalived.conf"
    assert stored.read_bytes() == b"vrrp_instance x {}\n"
    assert stat.S_IMODE(stored.stat().st_mode) == files.PUBLIC
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["octavia-keepalived.conf"]


def test_place_copies_when_the_destination_is_on_another_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename across file systems fails (EXDEV): the bytes are copied beside the destination instead."""
    done = upload(tmp_path / "server.pem", b"PEM")
    real_move, calls = files.move, []

    def move(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_move(src, dst)

    monkeypatch.setattr(files, "move", move)
    uploads.place(done, tmp_path / "etc" / "server.pem", files.PRIVATE)
    assert (tmp_path / "etc" / "server.pem").read_bytes() == b"PEM"
    assert not done.path.exists() and calls[1].parent == tmp_path / "etc"


def test_stage_check_commit_keeps_a_rejected_upload_as_failed(tmp_path: Path) -> None:
    """A staged upload is checked as ``<name>.new``, then stored or kept as ``.new-failed``."""
    target = tmp_path / "haproxy.cfg"
    target.write_bytes(b"good")

    def refuse(staged: Path) -> None:
        assert staged == tmp_path / "haproxy.cfg.new" and staged.read_bytes() == b"bad"
        raise InvalidInput("Invalid request", "no")

    with pytest.raises(InvalidInput):
        lifecycle.stage_check_commit(upload(target, b"bad"), target, files.PRIVATE, refuse, root=tmp_path)
    assert target.read_bytes() == b"good" and (tmp_path / "haproxy.cfg.new-failed").read_bytes() == b"bad"
    lifecycle.stage_check_commit(upload(target, b"new"), target, files.PRIVATE, lambda _: None, root=tmp_path)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.new-failed"]


def test_stage_check_commit_never_moves_through_a_link(tmp_path: Path) -> None:
    """A load balancer's folder that is a link: the upload is staged above it, nothing is placed
    through it, and what it points to stays as it was."""
    base, elsewhere = tmp_path / "base", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    (base / "lb").symlink_to(elsewhere)
    target = base / "lb" / "haproxy.cfg"
    with pytest.raises(UnsafePath):
        lifecycle.stage_check_commit(upload(target, b"cfg"), target, files.PRIVATE, lambda _: None, root=base)
    assert list(elsewhere.iterdir()) == []


def test_an_upload_left_by_a_killed_agent_is_removed_at_start(tmp_path: Path) -> None:
    """Upload temps carry the writer's pid like every temp: the start-up clean-up finds them."""
    stale = tmp_path / ".haproxy.cfg.tmp-999999999-up7"
    stale.write_bytes(b"partial")
    assert files.clean_stale_temps(tmp_path, recursive=True) == [stale]


def test_big_uploads_read_whole_take_turns() -> None:
    """Two checks of uploads as big as the read budget hold it one after the other; small ones pass."""
    budget = uploads._Budget(100)
    order: list[str] = []
    entered = threading.Event()

    def big(name: str) -> None:
        with budget.reserve(1000):
            order.append(f"{name} in")
            entered.set()
            time.sleep(0.1)
            order.append(f"{name} out")

    first = threading.Thread(target=big, args=("a",))
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=big, args=("b",))
    second.start()
    with budget.reserve(0):
        order.append("small")
    first.join(5)
    second.join(5)
    assert order.index("a out") < order.index("b in")


# -- the haproxy config, read in blocks ---------------------------------------------------------------------
def prepared(tmp_path: Path, text: bytes, block: int, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What ``prepare_config`` makes of ``text`` read in blocks of ``block`` bytes."""
    monkeypatch.setattr(service, "BLOCK", block)
    target = tmp_path / "haproxy.cfg"
    original = upload(target, text)
    result = service.prepare_config(original, uploads.Destination(target, tmp_path))
    try:
        return result.path.read_bytes()
    finally:
        result.discard()
        original.discard()


TOKENS = st.sampled_from(["global", "defaults", "frontend", "group", "nogroup", "haproxy", "user", "é", "x"])


@settings(max_examples=200, deadline=None)
@given(lines_of(TOKENS, max_lines=40), st.sampled_from([64, 128, 4096]))
@example("global\n    group haproxy\n    user nobody\n", 64)
@example("global\n    daemon\n" + "# é" * 40 + "\n    group nogroup\nfrontend x\n    group y\n", 64)
def test_reading_in_blocks_strips_as_the_whole_text_does(text: str, block: int) -> None:
    """For every config whose lines fit a block, the streamed pass equals ``strip_group_lines``."""
    assume(all(len(line.encode()) < block for line in text.splitlines()))
    with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory() as tmp:
        assert prepared(Path(tmp), text.encode(), block, monkeypatch) == (
            haproxy_config.strip_group_lines(text).encode()
        )


def test_a_line_longer_than_a_block_is_kept_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line cut across blocks is neither a header nor a group line, and is kept byte for byte."""
    text = ("global\n    daemon " + "é" * 200 + "\n    group haproxy\n").encode()
    assert prepared(tmp_path, text, 64, monkeypatch) == b"global\n    daemon " + "é".encode() * 200 + b"\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"global\n" + b"# pad\n" * 50 + b"    daemon\x07\n", "control character on line 52"),
        (b"global\n" + b"# pad\n" * 50 + b"    \xc3", "the configuration is not UTF-8"),
        (b"global\n    x\xff\n", "the configuration is not UTF-8"),
    ],
)
def test_control_bytes_and_bad_utf8_are_found_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, message: str
) -> None:
    """The checks of the whole text, with the same line numbers, whatever the block boundaries."""
    with pytest.raises(InvalidInput) as refused:
        prepared(tmp_path, text, 64, monkeypatch)
    assert refused.value.details is not None and refused.value.details.startswith(message)


def test_without_group_lines_the_upload_itself_is_used(tmp_path: Path) -> None:
    """No rewrite (no second file) for the controller's configs, which have no group line."""
    target = tmp_path / "haproxy.cfg"
    original = upload(target, b"global\n    daemon\n")
    assert service.prepare_config(original, uploads.Destination(target, tmp_path)) == original
