"""Game replays: stores replay files and serves them back by id."""
