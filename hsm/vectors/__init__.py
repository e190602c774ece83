"""Frozen CSR vectors: one DER file per pre-issuance refusal, and the context they are checked in."""
