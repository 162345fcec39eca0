"""Ingest: open, verify, validate and store sealed envelopes; answer each with a status.

``process`` holds the per-envelope logic as plain functions over bytes and a database session
(testable without MQTT); ``mqtt`` is the one paho adapter; ``worker`` ties them together;
``keyring`` loads the hospital ingest keys; ``plausibility`` flags values outside ranges.
"""
