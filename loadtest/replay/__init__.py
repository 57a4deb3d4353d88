"""Captured traffic: capture readers, secret redaction, the replay schedule, and a capture's
description (rate, burstiness, mix).
"""
