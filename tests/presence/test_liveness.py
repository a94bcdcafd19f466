"""How replicas take each other for dead: a death is noticed within the presence TTL."""

from __future__ import annotations

from neurelay.gateway.coordinating import DEAD, LOOK, LOOKS_PER_BEAT


def test_a_dead_replica_is_noticed_within_the_ttl_of_its_last_beat() -> None:
    # Silence is looked at every LOOK: the first look after DEAD of silence sees it.
    assert DEAD + LOOK <= 1.0


def test_a_beat_half_the_ttl_late_is_not_taken_for_death() -> None:
    beat_interval = LOOK * LOOKS_PER_BEAT
    assert beat_interval <= 1 / 3
    assert DEAD - beat_interval >= 0.5
