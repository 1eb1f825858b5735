"""Housekeeping run by Celery beat.

Pruning the published log and the inbox, refreshing the pipeline's gauges.
"""
