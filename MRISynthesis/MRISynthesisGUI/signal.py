"""A minimal signal (connect / call), so logic classes can report to a panel or a test without Qt."""


class Signal:
    def __init__(self):
        self._slots = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot) -> None:
        self._slots.remove(slot)

    def __call__(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)
