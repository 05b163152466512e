"""The VolumeBrowser widget: browse folders, upload through its FileUpload, download, delete, the usage
bar, and errors shown in the widget (a hostile upload name included)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest


@pytest.fixture
def vol(runtime_root):
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.kernel.volume import Volume
    from cellhop.server_ext.config import Cellhop

    control = EmbeddedControlPlane(Cellhop(simulated_gpus="", runtime_root=str(runtime_root),
                                           state_dir=str(runtime_root / "state")))
    volume = Volume("ds", quota="1M", client=control.storage())
    volume.put(b"a" * 1000, "models/a.bin")
    volume.put(b"readme", "README.txt")
    yield volume
    control.close()


def names(browser) -> list[str]:
    out = []
    for row in browser.rows.children:
        first = row.children[0] if hasattr(row, "children") else row
        out.append(first.description if hasattr(first, "description") and first.description else first.value)
    return out


def test_browse_upload_download_delete(vol, tmp_path):
    from cellhop.widgets import VolumeBrowser

    b = VolumeBrowser(vol, download_dir=tmp_path)
    assert names(b) == ["models/", "README.txt"]
    assert b.up_button.disabled and "1006 B of 1.0 MiB" in b.usage_text.value
    assert b.usage_bar.value == pytest.approx(1006 / 2**20)

    b.rows.children[0].children[0].click()  # open models/
    assert b.path == "models" and names(b) == ["a.bin"] and "/models" in b.title.value
    b.upload.set_trait("value", ({"name": "new.txt", "content": memoryview(b"uploaded"), "size": 8,
                                  "type": "text/plain", "last_modified": datetime.now(timezone.utc)},))
    assert b.message.value == "uploaded new.txt" and names(b) == ["a.bin", "new.txt"]
    assert vol.read_bytes("models/new.txt") == b"uploaded"
    assert b.upload.value == ()

    download = b.rows.children[1].children[2]
    download.click()
    assert (tmp_path / "new.txt").read_bytes() == b"uploaded"
    b.rows.children[0].children[-1].click()  # delete a.bin
    assert names(b) == ["new.txt"] and "14 B of" in b.usage_text.value  # README.txt + new.txt

    b.mkdir("sub")
    assert names(b) == ["sub/", "new.txt"]
    b.up()
    assert b.path == "" and names(b) == ["models/", "README.txt"]


def test_errors_show_in_the_widget(vol):
    from cellhop.widgets import VolumeBrowser

    b = VolumeBrowser(vol)
    b.upload_files([{"name": "../escape.txt", "content": memoryview(b"x")}])
    assert "contains '..'" in b.message.value
    b.upload_files([{"name": "huge.bin", "content": memoryview(b"x" * 2_000_000)}])
    assert "quota" in b.message.value
    b.open_folder("README.txt")
    assert "is a file" in b.message.value or "not a folder" in b.message.value
    assert b.path == "" and names(b) == ["models/", "README.txt"]
