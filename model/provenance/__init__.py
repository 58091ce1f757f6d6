"""Provenance an image's bytes carry: C2PA manifests, IPTC source types in XMP, generator metadata.

Keras-free, SQL-free and offline: nothing here opens a network connection.
"""
