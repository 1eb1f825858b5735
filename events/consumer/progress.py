"""Which messages of a batch are finished, and the offsets that may be committed."""

from __future__ import annotations

from events.consumer.units import Unit
from events.core.kafka import Record

TP = tuple[str, int]


class BatchProgress:
    """A message is finished when all its units are; a partition's offset moves only
    past an unbroken run of finished messages, so a commit never skips unfinished work.
    """

    def __init__(self, planned: list[Record], units: list[Unit]) -> None:
        self.planned = planned
        self.remaining = [0] * len(planned)
        for unit in units:
            self.remaining[unit.seq] += 1
        self.by_partition: dict[TP, list[int]] = {}
        for seq, message in enumerate(planned):
            self.by_partition.setdefault(
                (message.topic(), message.partition()), []
            ).append(seq)
        self.next_index: dict[TP, int] = dict.fromkeys(self.by_partition, 0)

    def mark_done(self, units: list[Unit]) -> None:
        for unit in units:
            self.remaining[unit.seq] -= 1

    def committable(self) -> dict[TP, int]:
        """Offsets to commit now (each partition's finished prefix not yet committed)."""
        offsets: dict[TP, int] = {}
        for tp, seqs in self.by_partition.items():
            index = self.next_index[tp]
            while index < len(seqs) and self.remaining[seqs[index]] == 0:
                offsets[tp] = self.planned[seqs[index]].offset() + 1
                index += 1
            self.next_index[tp] = index
        return offsets

    def unfinished(self) -> list[Record]:
        """The messages not covered by a committable offset, per partition in order."""
        return [
            self.planned[seq]
            for tp, seqs in self.by_partition.items()
            for seq in seqs[self.next_index[tp] :]
        ]
