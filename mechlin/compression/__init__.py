"""Compression is prediction: a language model + arithmetic coding = a lossless compressor.

``compress`` / ``decompress`` code any bytes with a model's next-token probabilities and
``constriction``'s range coder, exactly (one step loop for both directions; see
``mechlin.compression.coder``); ``read_header`` shows what a file records. ``surprisal`` gives
every token's bits, rank and entropy and the bits per byte / character / token that measure a
model; ``compression_report`` sets the real coded size beside gzip, xz, zstd and brotli and
draws where the model is surprised; ``compression_vs_capability`` correlates bits per
character with multiple-choice accuracy across models (Huang et al. 2024). ``ByteTable`` maps
bytes to tokens and back without trusting the tokenizer to round-trip.
"""

from mechlin.compression.bits import ESCAPE_BITS, Surprisal, surprisal
from mechlin.compression.capability import CompressionCapability, compression_vs_capability
from mechlin.compression.coder import compress, decompress, read_header
from mechlin.compression.container import Header
from mechlin.compression.report import CompressionReport, classic_sizes, compression_report
from mechlin.compression.tokens import ByteTable, Tokenized

__all__ = [
    "ESCAPE_BITS",
    "ByteTable",
    "CompressionCapability",
    "CompressionReport",
    "Header",
    "Surprisal",
    "Tokenized",
    "classic_sizes",
    "compress",
    "compression_report",
    "compression_vs_capability",
    "decompress",
    "read_header",
    "surprisal",
]
