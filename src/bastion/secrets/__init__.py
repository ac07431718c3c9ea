"""The secrets vault: envelope encryption with per-organisation data keys."""
