"""scseg.machine names the CPU from /proc/cpuinfo, and still names something where that file is absent."""

from __future__ import annotations

from scseg.machine import cpu_model


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: avx512f\n")
    assert cpu_model(str(info)) == "AMD EPYC 9B14"


def test_cpu_model_without_cpuinfo_is_a_non_empty_name(tmp_path):
    assert cpu_model(str(tmp_path / "absent")).strip()
