"""Workflow definition shared by Snakemake and DVC: the stage table and cluster profile."""
