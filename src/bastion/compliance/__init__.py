"""Compliance center: controls of SOC 2, ISO 27001, GDPR, CCPA and HIPAA evaluated from
Bastion's live state, their history, attestations, signed reports, and access review
campaigns. docs/compliance.md is the user's guide."""
