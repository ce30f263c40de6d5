"""Interfaces: server-rendered HTML pages in Japanese and English."""
