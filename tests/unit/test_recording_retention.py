"""media/retention.py: which recordings go, by age and by quota (pure), and a real directory cleaned."""

from __future__ import annotations

import os

from callbridge.media.retention import DAY_S, RecordingFile, RetentionPolicy, clean_recordings, plan_cleanup

NOW = 1_800_000_000.0


def files(*specs: tuple[str, int, float]) -> list[RecordingFile]:
    return [RecordingFile(name, size, NOW - age_days * DAY_S) for name, size, age_days in specs]


def test_retention_removes_what_is_older_than_the_period():
    plan = plan_cleanup(files(("old.wav", 10, 31), ("new.wav", 10, 1), ("edge.wav", 10, 29.9)), NOW,
                        RetentionPolicy(retention_days=30))
    assert [f.name for f in plan] == ["old.wav"]


def test_quota_removes_oldest_first_until_the_rest_fit():
    plan = plan_cleanup(files(("a.wav", 100, 5), ("b.wav", 100, 4), ("c.wav", 100, 3), ("d.wav", 100, 2)), NOW,
                        RetentionPolicy(max_bytes=250))
    assert [f.name for f in plan] == ["a.wav", "b.wav"]


def test_a_recording_being_written_is_never_deleted_but_counts():
    plan = plan_cleanup(files(("live.wav", 200, 40), ("a.wav", 100, 5), ("b.wav", 100, 1)), NOW,
                        RetentionPolicy(retention_days=30, max_bytes=250), in_use={"live.wav"})
    assert [f.name for f in plan] == ["a.wav", "b.wav"]  # 200 of the 250 are the live one


def test_no_policy_keeps_everything():
    assert plan_cleanup(files(("a.wav", 10**12, 10_000)), NOW, RetentionPolicy()) == []


def test_clean_a_directory(tmp_path):
    for name, size, age_days in (("old.wav", 1000, 40), ("big.wav", 5000, 2), ("new.wav", 1000, 0),
                                 ("notes.txt", 9, 90)):
        path = tmp_path / name
        path.write_bytes(b"\0" * size)
        os.utime(path, (NOW - age_days * DAY_S, NOW - age_days * DAY_S))
    removed = clean_recordings(tmp_path, NOW, RetentionPolicy(retention_days=30, max_bytes=2000))
    assert removed == (2, 6000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.wav", "notes.txt"]
    assert clean_recordings(tmp_path / "missing", NOW, RetentionPolicy(retention_days=1)) == (0, 0)
