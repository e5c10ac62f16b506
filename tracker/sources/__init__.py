"""Where snapshots come from: JSON Lines files today, the OpenAI API later."""
