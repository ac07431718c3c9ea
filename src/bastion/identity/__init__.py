"""Users, passwords, sessions, API keys and service accounts."""

# Registers identity's facts with authorization's engine whenever identity is imported.
from bastion.identity import facts as facts
