"""Single sign-on."""
