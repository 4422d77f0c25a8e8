"""Importers: turn a corpus folder in a known layout into manifest records (all offline).

Each returns an :class:`ImportResult` whose ``records`` carry absolute ``audio_filepath``,
``label``, ``split``, ``group``, and ``duration`` (s) / ``sample_rate`` (Hz) read from the headers;
write them with :func:`audioconv.io.manifest.write_manifest`.
"""
from ._common import AUDIO_EXTENSIONS, ImportResult, hash_fraction, speaker_group
from .esc50 import import_esc50
from .folder import import_folder, split_for_group
from .speech_commands import SILENCE, TWELVE_WORDS, UNKNOWN, import_speech_commands
from .urbansound8k import import_urbansound8k

__all__ = [
    "AUDIO_EXTENSIONS",
    "ImportResult",
    "hash_fraction",
    "speaker_group",
    "split_for_group",
    "import_speech_commands",
    "import_esc50",
    "import_urbansound8k",
    "import_folder",
    "TWELVE_WORDS",
    "UNKNOWN",
    "SILENCE",
]
