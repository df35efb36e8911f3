"""
Tests of the cluster over Redis (SPEC §6).
"""
