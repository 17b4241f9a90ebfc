"""Labelled texts the residual-direction, interchange and steering tests share."""

TEXTS = [
    "The capital of France is",
    "The capital of Italy is",
    "The city of Paris is",
    "The city of Rome is",
    "Big Ben is in London",
    "Miles Davis plays the trumpet",
    "Toko Yasuda plays the guitar",
    "Beats Music is owned by Apple",
]
LABELS = [0, 0, 0, 0, 1, 1, 1, 1]  # 0: places, 1: other facts
