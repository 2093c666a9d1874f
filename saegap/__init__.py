"""saegap: are my SAE's reconstruction errors pathological?"""

__version__ = "0.1.0"
