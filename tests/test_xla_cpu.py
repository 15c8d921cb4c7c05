"""The XLA:CPU vector-width setting applied on import."""

import os

from addernet_jax import xla_cpu


def test_avx512_is_read_from_cpuinfo(tmp_path):
    with_avx512 = tmp_path / "a"
    with_avx512.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512bw\n")
    without = tmp_path / "b"
    without.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert xla_cpu.cpu_has_avx512(str(with_avx512))
    assert not xla_cpu.cpu_has_avx512(str(without))
    assert not xla_cpu.cpu_has_avx512(str(tmp_path / "missing"))


def test_tuning_respects_the_user(monkeypatch):
    monkeypatch.setattr(xla_cpu, "cpu_has_avx512", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.delenv("ADDERNET_NO_XLA_TUNING", raising=False)
    assert xla_cpu.tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x " + xla_cpu.VECTOR_WIDTH_FLAG
    assert not xla_cpu.tune_xla_cpu()  # already there: not added twice
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    assert not xla_cpu.tune_xla_cpu()
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("ADDERNET_NO_XLA_TUNING", "1")
    assert not xla_cpu.tune_xla_cpu()
    monkeypatch.setattr(xla_cpu, "cpu_has_avx512", lambda: False)
    monkeypatch.delenv("ADDERNET_NO_XLA_TUNING")
    assert not xla_cpu.tune_xla_cpu()
