"""What is sent and when: load shapes over time, arrival times, request payloads, and the protocols
that shape each request.
"""
