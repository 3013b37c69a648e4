"""Pure box and region operations for the detector (no layers, no state)."""
