"""mt5-sync: plain modules (no Prefect imports) that flows/ and tasks/ orchestrate."""
