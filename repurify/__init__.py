"""repurify: reproduce adversarial purification defenses end to end."""

__version__ = "0.1.0"
