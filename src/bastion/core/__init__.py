"""Framework-free building blocks shared by every domain. Imports no domain package."""
