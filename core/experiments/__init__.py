"""Experiments that run several variants of one model and compare them (plan grid, importance sweep)."""
