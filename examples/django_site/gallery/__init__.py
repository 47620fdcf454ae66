"""The example's one app: photos with an optional image field, filled from a fixture."""
