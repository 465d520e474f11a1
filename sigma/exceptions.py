"""Exceptions raised by sigma.

Every error names the file or argument, the problem and the fix. The types let callers
(the CLI, the GUI) react to a class of problem without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "SigmaError",
    "SchemaError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "NoSpectrumImageError",
    "MissingCalibrationError",
    "XrayLineError",
    "EmptySelectionError",
    "ConfigurationError",
    "SimulationParameterError",
    "SignalSelectionError",
    "OutputPathError",
]


class SigmaError(Exception):
    """Base class of every error sigma raises on purpose."""


class SchemaError(SigmaError, ValueError):
    """A dataset does not follow sigma's data contract (dims, coords, units, values)."""


class UnsupportedFormatError(SigmaError, ValueError):
    """The file extension (or ``format=``) is not one sigma can read."""


class CorruptFileError(SigmaError, OSError):
    """The file exists and has a known extension but its content cannot be parsed."""


class NoSpectrumImageError(SigmaError, ValueError):
    """The file holds no spectrum image (e.g. only images, or a single spectrum where a map is needed)."""


class MissingCalibrationError(SigmaError, ValueError):
    """The energy axis has no usable calibration (scale/offset/units)."""


class XrayLineError(SigmaError, ValueError):
    """An X-ray line is unknown, malformed or lies outside the energy range."""


class EmptySelectionError(SigmaError, ValueError):
    """A selection (pixels, clusters, lines) is empty where at least one item is needed."""


class ConfigurationError(SigmaError, ValueError):
    """An argument or configuration value is invalid or inconsistent with the others."""


class SimulationParameterError(ConfigurationError):
    """An argument of a simulator in :mod:`sigma.datasets` is outside what it accepts."""


class SignalSelectionError(SigmaError, ValueError):
    """A file holds several candidate signals and ``select_signal`` does not pick exactly one.

    E.g. one spectrum image per detector, and the choice is missing or ambiguous.
    """


class OutputPathError(SigmaError, ValueError):
    """The output path cannot take the results (suffix, the input itself, not writable)."""
