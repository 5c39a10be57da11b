"""Every case of the bad-input catalogue: rejected with file, line and field, or tolerated with a counted warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from peft_ir.errors import InputError
from reliability.catalogue import BAD_CONFIGS, REJECTED, TOLERATED, BadConfig, Rejected, Tolerated, load_bad_config


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.name)
def test_rejected_with_file_line_and_field(case: Rejected, tmp_path: Path) -> None:
    path = _write(tmp_path, case.file, case.content)
    with pytest.raises(InputError) as info:
        case.reader(path)
    err = info.value
    at_fault = tmp_path / case.at_fault if case.at_fault else path
    assert err.path == str(at_fault) and err.line == case.line and err.field == case.field, str(err)
    assert case.fragment in str(err)
    if case.line is not None:
        assert f"{at_fault}:{case.line}" in str(err)


@pytest.mark.parametrize("case", TOLERATED, ids=lambda c: c.name)
def test_tolerated_with_a_counted_warning(case: Tolerated, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    path = _write(tmp_path, case.file, case.content)
    assert case.expect(case.reader(path))
    if case.warning:
        assert case.warning in caplog.text
    else:
        assert not caplog.records


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=lambda c: c.name)
def test_bad_configs_fail_before_any_work(case: BadConfig, tmp_path: Path) -> None:
    from peft_ir.errors import PeftIRError

    beir = Path(__file__).resolve().parents[2] / "data" / "scifact"
    with pytest.raises(PeftIRError) as info:
        load_bad_config(case, tmp_path, beir)
    message = str(info.value)
    assert f"{tmp_path / 'config.yaml'}:{case.line}:" in message, message
    assert case.key in message and case.fragment in message, message
    if case.never_echoed:
        assert case.never_echoed not in message
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # nothing written
