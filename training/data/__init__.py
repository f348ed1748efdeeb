"""Training data readers. Each yields ``CaseData`` in the canonical LPS order shared with serving."""
