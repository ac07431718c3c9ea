"""Permission catalogue, roles, grants and the decision engine."""
