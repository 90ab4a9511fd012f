"""Gameplay diagnostics: accepts client diagnostic reports and serves a summary."""
