"""A stand-in for a confluent-kafka ``Message`` in unit tests of the CDC parsers, the lean path and the
consumer's guards: the accessors they call (``key()``, ``value()``, ``topic()``, ``partition()``,
``offset()``) over plain fields."""

from __future__ import annotations

from dataclasses import dataclass

TOPIC = "shop.public.orders"


@dataclass
class Msg:
    k: bytes | None
    v: bytes | None
    t: str = TOPIC
    o: int = 0
    p: int = 0

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o
