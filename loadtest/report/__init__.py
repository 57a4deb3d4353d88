"""What people read: the shared render kit, then the run, capacity, comparison, cost, messy-traffic and
study reports.
"""
