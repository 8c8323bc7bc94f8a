# repurify: Snakemake entry point. The rules are built from the one stage table in
# workflow/dag.py (which also renders dvc.yaml), so both engines run the same DAG.
#
#   snakemake --cores all                          # the profile named in params.yaml
#   snakemake --cores all --config profile=smoke   # another profile
#   snakemake --cores all --profile slurm          # on a SLURM cluster (see slurm/)

include: "workflow/rules/pipeline.smk"


# Included rules never become the default target, so the target lives here.
rule all:
    default_target: True
    localrule: True
    input:
        [o.format(profile=PROFILE) for st in STAGES for o in (*st.outs, *st.uncached, *st.metrics)],
