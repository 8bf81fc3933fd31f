"""Multi-authority CP-ABE (Rouselakis-Waters 2015): independent authorities, keys
bound by a global identifier. See scheme.py for the construction and its costs."""
