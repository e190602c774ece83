"""hsm package."""
