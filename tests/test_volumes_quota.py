"""Quotas hold under concurrent uploads: each upload reserves its declared size (or what it has written)
under the volume's quota lock (an flock, so separate processes agree); together they cannot pass it."""

from __future__ import annotations

import textwrap
import threading

import pytest

from cellhop.errors import VolumeQuotaExceeded
from cellhop.server_ext.volumes import VolumeStore

KIB = 1024


@pytest.fixture
def store(runtime_root):
    store = VolumeStore(runtime_root / "state" / "volumes")
    store.create("small", quota=100 * KIB)
    return store


def staging(store):
    return list((store.root / "small" / "staging").iterdir())


def test_two_uploads_of_declared_size_cannot_pass_the_quota_together(store):
    first = store.upload("small", "a.bin", size=60 * KIB)  # reserved, nothing written yet
    with pytest.raises(VolumeQuotaExceeded, match=r"other uploads in progress.*quota of 100\.0 KiB"):
        store.upload("small", "b.bin", size=60 * KIB)
    first.write(b"a" * 60 * KIB)
    first.commit()
    with pytest.raises(VolumeQuotaExceeded, match="quota of 100.0 KiB"):  # landed: counted as usage now
        store.put("small", "b.bin", b"b" * 60 * KIB)
    store.put("small", "b.bin", b"b" * 40 * KIB)  # what is left still fits
    assert sorted(e["path"] for e in store.ls("small")) == ["a.bin", "b.bin"]
    assert store.usage("small")["bytes"] == 100 * KIB and staging(store) == []


def test_two_streamed_uploads_interleaved_cannot_pass_the_quota_together(store):
    """Neither says its size: they write 10 KiB at a time in step; one is refused, the other lands."""
    step = threading.Barrier(2, timeout=10)
    results: dict[str, object] = {}

    def chunks():
        for _ in range(6):
            yield b"x" * 10 * KIB
            try:
                step.wait()
            except threading.BrokenBarrierError:
                pass  # the other upload was refused: go on alone

    def upload(path):
        try:
            results[path] = store.put("small", path, chunks())
        except Exception as exc:
            results[path] = exc
            step.abort()

    threads = [threading.Thread(target=upload, args=(p,)) for p in ("a.bin", "b.bin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    refused = [p for p, r in results.items() if isinstance(r, VolumeQuotaExceeded)]
    landed = [p for p, r in results.items() if isinstance(r, dict)]
    assert len(refused) == 1 and len(landed) == 1, results
    assert "quota of 100.0 KiB" in str(results[refused[0]])
    assert [e["path"] for e in store.ls("small")] == landed  # nothing of the refused one
    assert store.usage("small")["bytes"] == 60 * KIB
    assert staging(store) == []


HOLDS_A_RESERVATION = textwrap.dedent("""
    import sys
    from cellhop.server_ext.volumes import VolumeStore
    up = VolumeStore(sys.argv[1]).upload("small", "big.bin", size=int(sys.argv[2]))
    print("reserved", flush=True)
    sys.stdin.readline()
    up.write(b"y" * int(sys.argv[2]))
    up.commit()
    print("landed", flush=True)
""")


def test_another_process_reservation_counts_and_dies_with_it(store, python_child):
    child = python_child(HOLDS_A_RESERVATION, str(store.root), str(70 * KIB))
    child.expect("reserved", timeout=30)
    with pytest.raises(VolumeQuotaExceeded, match="other uploads in progress"):
        store.put("small", "mine.bin", b"m" * 40 * KIB)
    child.send("go")
    child.expect("landed", timeout=30)
    assert store.usage("small")["bytes"] == 70 * KIB
    store.put("small", "mine.bin", b"m" * 30 * KIB)

    # An upload that dies part-way (30 KiB declared, 20 written) counts while its process lives, and not after.
    store.rm("small", "mine.bin")
    dying = python_child(DIES_PART_WAY, str(store.root), str(30 * KIB), str(20 * KIB))
    dying.expect("written", timeout=30)
    assert staging(store), "the live upload's staging file"
    with pytest.raises(VolumeQuotaExceeded, match="other uploads in progress"):
        store.put("small", "mine.bin", b"m" * 30 * KIB)  # 70 landed + 30 reserved + 30 > 100
    dying.kill()
    store.put("small", "mine.bin", b"m" * 30 * KIB)  # its reservation and its 20 KiB died with it
    assert store.usage("small")["bytes"] == 100 * KIB
    assert staging(store) == []


DIES_PART_WAY = textwrap.dedent("""
    import sys
    from cellhop.server_ext.volumes import VolumeStore
    up = VolumeStore(sys.argv[1]).upload("small", "dead.bin", size=int(sys.argv[2]))
    up.write(b"z" * int(sys.argv[3]))
    print("written", flush=True)
    sys.stdin.readline()  # killed here
""")
