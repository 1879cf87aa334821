"""The domain core: quantities, states and events of a charging site. Stdlib only, no protocol names."""
