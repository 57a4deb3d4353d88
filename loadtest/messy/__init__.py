"""Messy traffic: the kinds of bad request, which arrivals carry them, and the verdict on each answer."""
