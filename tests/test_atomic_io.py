"""Atomic directory swaps survive a crash between their two renames."""

import os

import pytest

from alter import io as alter_io


def _save(target, text):
    with alter_io.atomic_directory(target) as tmp:
        (tmp / "weights.txt").write_text(text)


def test_a_crash_between_the_two_renames_is_recovered_on_the_next_open(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    _save(target, "old")
    real_replace, calls = os.replace, [0]

    def dying_replace(src, dst):
        calls[0] += 1
        if calls[0] == 2:                      # after target -> backup, before new -> target
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(alter_io.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _save(target, "new")
    monkeypatch.setattr(alter_io.os, "replace", real_replace)
    assert not target.exists()                 # the moment the issue describes
    alter_io.recover_directory(target)
    assert (target / "weights.txt").read_text() == "old"
    _save(target, "new")                       # and the next save works and leaves no backup behind
    assert (target / "weights.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_readers_recover_first(tmp_path):
    import alter
    from alter.train.checkpoint import latest_checkpoint

    target = tmp_path / "adapter"
    _save(target, "old")
    os.replace(target, tmp_path / ".adapter.old")
    with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
        alter.modeling.model.read_adapter_config(target)
    assert (target / "weights.txt").read_text() == "old"       # brought back, then found no config
    ckpts = tmp_path / "checkpoints"
    _save(ckpts / "step-00000003", "x")
    os.replace(ckpts / "step-00000003", ckpts / ".step-00000003.old")
    latest_checkpoint(ckpts)
    assert (ckpts / "step-00000003" / "weights.txt").is_file()
