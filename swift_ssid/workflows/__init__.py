"""Orchestration: the whole pipeline (stage by stage, resumable), the paper's protocols and the demo.

Workflows run the real ``swift`` CLI in subprocesses and the ``swift-ssid`` steps in process.
"""
