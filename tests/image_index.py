"""A local package index for image tests, made of wheels this test session builds itself.

`make_index(root)` writes tiny pure-Python packages as real wheels (zip,
METADATA, WHEEL, RECORD with hashes) and a PEP 503 "simple" index over them,
so `pip_install(..., index_url=index.url)` builds with uv and no network.

Packages: chtest-alpha 1.0, 1.1, 2.0 (module `chtest_alpha`, class `Thing`)
and chtest-beta 1.0 (requires chtest-alpha>=1.0,<2).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ALPHA = '''VERSION = "{version}"


class Thing:
    def __init__(self, value):
        self.value = value

    def doubled(self):
        return self.value * 2
'''

BETA = '''import chtest_alpha

VERSION = "{version}"


def alpha_version():
    return chtest_alpha.VERSION
'''


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str], requires: tuple = ()) -> Path:
    """A py3-none-any wheel of `files` ({path in the wheel: text}); returns its path."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents = {**files, f"{info}/METADATA": metadata,
                f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: cellhop-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},{_record_hash(text.encode())},{len(text.encode())}\n" for path, text in contents.items())
    record += f"{info}/RECORD,,\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_in, text in {**contents, f"{info}/RECORD": record}.items():
            zf.writestr(name_in, text)
    return path


@dataclass
class LocalIndex:
    root: Path
    files: Path
    wheels: dict  # (name, version) -> wheel path

    @property
    def url(self) -> str:
        return (self.root / "simple").as_uri() + "/"

    def unpacked(self, name: str, version: str, target: Path) -> Path:
        """The wheel unpacked into `target` (a folder to put on sys.path: importable, with its metadata)."""
        with zipfile.ZipFile(self.wheels[(name, version)]) as zf:
            zf.extractall(target)
        return target


def make_index(root: Path) -> LocalIndex:
    root = Path(root)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    wheels = {}
    for version in ("1.0", "1.1", "2.0"):
        wheels[("chtest-alpha", version)] = make_wheel(
            files, "chtest-alpha", version, {"chtest_alpha/__init__.py": ALPHA.format(version=version)})
    wheels[("chtest-beta", "1.0")] = make_wheel(
        files, "chtest-beta", "1.0", {"chtest_beta/__init__.py": BETA.format(version="1.0")},
        requires=("chtest-alpha>=1.0,<2",))
    simple = root / "simple"
    by_name: dict[str, list[Path]] = {}
    for (name, _), path in wheels.items():
        by_name.setdefault(name, []).append(path)
    links = []
    for name, paths in sorted(by_name.items()):
        (simple / name).mkdir(parents=True, exist_ok=True)
        anchors = "".join(
            f'<a href="{p.as_uri()}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a><br>\n'
            for p in sorted(paths))
        (simple / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n")
        links.append(f'<a href="{name}/">{name}</a><br>\n')
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{''.join(links)}</body></html>\n")
    return LocalIndex(root, files, wheels)
