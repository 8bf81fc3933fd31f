"""ehr-abe: attribute-based-encryption access control for IoMT health records."""

__version__ = "0.1.0"
