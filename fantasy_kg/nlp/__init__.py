"""The learned entity tagger: a spaCy pipeline trained on LitBank and shipped as package data.

This is an integration module (it wraps a third-party model runtime), so the pure domain never
imports spaCy: the baseline extractor receives tagged spans through
:class:`fantasy_kg.domain.baseline.tagging.Tagger` and this package supplies the implementation.
"""
