"""Users, passwords, sessions, API keys and service accounts."""
